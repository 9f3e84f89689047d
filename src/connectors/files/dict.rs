//! Dictionary encoding while parsing: every distinct text value is stored
//! once and rows hold a `u32` code. Values up to 16 bytes are packed into a
//! `u128` and found in a small open-addressing table (one multiply, usually
//! one probe); longer ones go through a hash map.

use std::sync::Arc;

use deltalake::arrow::array::{Array, DictionaryArray, StringArray, UInt32Array};
use deltalake::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use deltalake::arrow::datatypes::UInt32Type;
use foldhash::{HashMap, HashMapExt};

/// Builds one dictionary-encoded text column.
pub(crate) struct DictBuilder {
    codes: Vec<u32>,
    /// Rows that are null (rare).
    nulls: Vec<u32>,
    /// The distinct values so far, as Arrow stores them (one byte buffer
    /// and offsets), so that each batch's dictionary is two memcpys instead
    /// of a copy per value: with 100,000 machine ids and a batch every
    /// 131,072 rows, per-value copies were most of a text reader's time.
    bytes: Vec<u8>,
    offsets: Vec<i32>,
    /// The last dictionary handed out, reused while no value is added.
    last: Option<Arc<StringArray>>,
    /// (packed value + 1 in the top byte's length field, code); 0 = empty slot.
    table: Vec<(u128, u32)>,
    long: HashMap<Vec<u8>, u32>,
}

impl Default for DictBuilder {
    fn default() -> Self {
        DictBuilder {
            codes: Vec::with_capacity(super::BATCH_ROWS),
            nulls: Vec::new(),
            bytes: Vec::new(),
            offsets: vec![0],
            last: None,
            table: vec![(0, 0); 256],
            long: HashMap::new(),
        }
    }
}

#[inline]
fn pack(s: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b[..s.len()].copy_from_slice(s);
    // The length goes in the top byte (which is zero for < 16 bytes) so that
    // no packed value is 0 and "a" and "a\0" differ.
    let v = u128::from_le_bytes(b);
    if s.len() < 16 {
        v | ((s.len() as u128 + 1) << 120)
    } else {
        v
    }
}

impl DictBuilder {
    /// Add a row with this value.
    #[inline]
    pub fn push(&mut self, s: &[u8]) -> Result<(), std::str::Utf8Error> {
        let code = self.code(s)?;
        self.codes.push(code);
        Ok(())
    }

    /// Add a null row.
    pub fn push_null(&mut self) {
        self.nulls.push(self.codes.len() as u32);
        self.codes.push(0);
    }

    /// Keep the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        self.codes.truncate(n);
        while self.nulls.last().is_some_and(|&r| r as usize >= n) {
            self.nulls.pop();
        }
    }

    #[inline]
    fn code(&mut self, s: &[u8]) -> Result<u32, std::str::Utf8Error> {
        // 16-byte values with a zero top byte would collide with nothing but
        // are rare; send them to the map with the long ones.
        if s.len() > 16 || (s.len() == 16 && s[15] == 0) {
            if let Some(&c) = self.long.get(s) {
                return Ok(c);
            }
            let c = self.add(s)?;
            self.long.insert(s.to_vec(), c);
            return Ok(c);
        }
        let p = pack(s);
        let mask = self.table.len() - 1;
        let mut h = ((p as u64 ^ (p >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40)
            as usize
            & mask;
        loop {
            let (k, c) = self.table[h];
            if k == p {
                return Ok(c);
            }
            if k == 0 {
                let c = self.add(s)?;
                self.table[h] = (p, c);
                if self.len() * 2 > self.table.len() {
                    self.grow();
                }
                return Ok(c);
            }
            h = (h + 1) & mask;
        }
    }

    fn add(&mut self, s: &[u8]) -> Result<u32, std::str::Utf8Error> {
        std::str::from_utf8(s)?;
        self.bytes.extend_from_slice(s);
        self.offsets.push(self.bytes.len() as i32);
        Ok(self.len() as u32 - 1)
    }

    /// Number of distinct values.
    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn grow(&mut self) {
        let size = self.table.len() * 2;
        let old = std::mem::replace(&mut self.table, vec![(0, 0); size]);
        let mask = self.table.len() - 1;
        for (k, c) in old.into_iter().filter(|e| e.0 != 0) {
            let mut h = ((k as u64 ^ (k >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40)
                as usize
                & mask;
            while self.table[h].0 != 0 {
                h = (h + 1) & mask;
            }
            self.table[h] = (k, c);
        }
    }

    /// The rows so far as a dictionary array (the builder keeps its values
    /// for the next batch, so codes stay stable across batches).
    pub fn finish(
        &mut self,
    ) -> Result<DictionaryArray<UInt32Type>, deltalake::arrow::error::ArrowError> {
        let codes = std::mem::replace(&mut self.codes, Vec::with_capacity(super::BATCH_ROWS));
        let nulls = std::mem::take(&mut self.nulls);
        let nulls = (!nulls.is_empty()).then(|| {
            let mut ok = vec![true; codes.len()];
            nulls.iter().for_each(|&r| ok[r as usize] = false);
            NullBuffer::from(ok)
        });
        let keys = UInt32Array::new(codes.into(), nulls);
        let values = match &self.last {
            Some(v) if v.len() == self.len() => v.clone(),
            _ => {
                let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets.clone()));
                let v = Arc::new(StringArray::try_new(
                    offsets,
                    Buffer::from(self.bytes.clone()),
                    None,
                )?);
                self.last = Some(v.clone());
                v
            }
        };
        DictionaryArray::try_new(keys, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::ArrayAccessor;

    #[test]
    fn codes_are_stable_and_long_values_work() {
        let mut d = DictBuilder::default();
        let long = "a-rather-long-machine-identifier";
        for s in ["mc-0001", "plant-a", "mc-0001", long, "", long] {
            d.push(s.as_bytes()).unwrap();
        }
        d.push_null();
        for i in 0..1000 {
            d.push(format!("m{i}").as_bytes()).unwrap();
        }
        assert!(d.push(&[0xff, 0xfe]).is_err());
        d.truncate(1007);
        let a = d.finish().unwrap();
        assert_eq!(a.len(), 1007);
        assert_eq!(a.keys().values()[..6], [0, 1, 0, 2, 3, 2]);
        assert!(a.is_null(6));
        let v = a.downcast_dict::<StringArray>().unwrap();
        assert_eq!(v.value(3), long);
        assert_eq!(v.value(1006), "m999");
    }
}
