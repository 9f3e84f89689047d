//! Dictionary encoding while parsing: every distinct text value is stored
//! once and rows hold a `u32` code. Values up to 16 bytes are packed into a
//! `u128` and found through an open-addressing table of 4-byte slots (one
//! multiply, usually one probe); longer ones go through a hash map.

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
    /// Open-addressing table of `code + 1` (0 = empty slot), 4 bytes a
    /// slot; the values it points to are in `packed`, in code order.
    /// With 100,000 machine ids, slots of (value, code) took 8 MiB per
    /// reader thread, beyond L2 and the TLB's reach: the probe's cache and
    /// TLB misses were 30% of a CSV parse. Now 1 MiB of slots and 1.6 MiB of
    /// values.
    slots: Vec<u32>,
    /// Short values pushed but not yet looked up: (row, packed value).
    /// Each one's slot is prefetched when it is pushed; they are resolved
    /// [`PENDING`] at a time, with the values their slots point to
    /// prefetched for all of them first, so that the
    /// cache misses of a large dictionary (100,000 machine ids: every probe
    /// a miss, 30% of a CSV parse) overlap instead of one after another.
    pending: Vec<(u32, u128)>,
    /// Every value's packed form (length + 1 in the top byte), by code; 0
    /// for values that live in `long`.
    packed: Vec<u128>,
    long: HashMap<Vec<u8>, u32>,
}

/// Short values looked up together.
const PENDING: usize = 64;

/// Ask for the cache line of `r` (a hint: never faults, no effect on results).
#[inline(always)]
fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching has no architectural effect and does not fault;
    // SSE is part of x86-64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            r as *const T as *const i8,
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// The bytes of a packed short value.
fn unpack(p: &u128) -> &[u8] {
    // Shorter values keep length + 1 (1..=16) in the top byte.
    let len = match (p >> 120) as usize {
        l @ 1..=16 => l - 1,
        _ => 16,
    };
    // SAFETY: a u128 is 16 initialised bytes; x86-64 and aarch64 are
    // little-endian, as pack() assumes, so the value's bytes come first.
    let bytes: &[u8; 16] = unsafe { &*(p as *const u128 as *const [u8; 16]) };
    &bytes[..len]
}

impl Default for DictBuilder {
    fn default() -> Self {
        DictBuilder {
            codes: Vec::with_capacity(super::BATCH_ROWS),
            nulls: Vec::new(),
            bytes: Vec::new(),
            offsets: vec![0],
            last: None,
            slots: vec![0; 256],
            packed: Vec::new(),
            pending: Vec::with_capacity(PENDING),
            long: HashMap::new(),
        }
    }
}

#[inline]
fn pack(s: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b[..s.len()].copy_from_slice(s);
    // The length + 1 goes in the top byte (which is zero for < 16 bytes) so
    // that no packed value is 0 and "a" and "a\0" differ; 16-byte values
    // packed here end in a byte above 16.
    let v = u128::from_le_bytes(b);
    if s.len() < 16 {
        v | ((s.len() as u128 + 1) << 120)
    } else {
        v
    }
}

/// A packed value's home slot (before masking).
#[inline]
fn slot_of(p: u128) -> usize {
    ((p as u64 ^ (p >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize
}

impl DictBuilder {
    /// Add a row with this value.
    #[inline]
    pub fn push(&mut self, s: &[u8]) -> Result<(), std::str::Utf8Error> {
        // A 16-byte value whose last byte is 16 or less could pack like a
        // shorter one (the length goes in that byte); such values are rare
        // and go to the map with the long ones.
        if s.len() < 16 || (s.len() == 16 && s[15] > 16) {
            if !s.is_ascii() {
                std::str::from_utf8(s)?;
            }
            let p = pack(s);
            // The slot's line is fetched while the next rows are parsed.
            prefetch(&self.slots[slot_of(p) & (self.slots.len() - 1)]);
            self.pending.push((self.codes.len() as u32, p));
            self.codes.push(0);
            if self.pending.len() == PENDING {
                self.resolve();
            }
            return Ok(());
        }
        // Codes stay in order of first appearance.
        if !self.pending.is_empty() {
            self.resolve();
        }
        let code = match self.long.get(s) {
            Some(&c) => c,
            None => {
                std::str::from_utf8(s)?;
                let c = self.add(s);
                self.packed.push(0);
                self.long.insert(s.to_vec(), c);
                c
            }
        };
        self.codes.push(code);
        Ok(())
    }

    /// Look up the pending short values and fill in their rows' codes.
    fn resolve(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let mask = self.slots.len() - 1;
        // The slots were prefetched when the values were pushed; now the
        // values they point to, for all of them before the first compare.
        for (_, p) in &pending {
            let c = self.slots[slot_of(*p) & mask];
            if c != 0 {
                prefetch(&self.packed[c as usize - 1]);
            }
        }
        for &(row, p) in &pending {
            self.codes[row as usize] = self.code(p);
        }
        self.pending = pending;
        self.pending.clear();
    }

    /// Add a null row.
    pub fn push_null(&mut self) {
        self.nulls.push(self.codes.len() as u32);
        self.codes.push(0);
    }

    /// Keep the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        self.pending.retain(|&(r, _)| (r as usize) < n);
        self.codes.truncate(n);
        while self.nulls.last().is_some_and(|&r| r as usize >= n) {
            self.nulls.pop();
        }
    }

    /// The code of a packed short value, added if new.
    #[inline]
    fn code(&mut self, p: u128) -> u32 {
        let mask = self.slots.len() - 1;
        let mut h = slot_of(p) & mask;
        loop {
            let c = self.slots[h];
            if c == 0 {
                let c = self.add(unpack(&p));
                self.packed.push(p);
                self.slots[h] = c + 1;
                if self.len() * 2 > self.slots.len() {
                    self.grow();
                }
                return c;
            }
            if self.packed[c as usize - 1] == p {
                return c - 1;
            }
            h = (h + 1) & mask;
        }
    }

    /// Append a value (checked as UTF-8 by the caller); its code.
    fn add(&mut self, s: &[u8]) -> u32 {
        self.bytes.extend_from_slice(s);
        self.offsets.push(self.bytes.len() as i32);
        self.len() as u32 - 1
    }

    /// Number of distinct values.
    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        self.slots = vec![0; size];
        let mask = size - 1;
        for (c, &p) in self.packed.iter().enumerate() {
            if p == 0 {
                continue;
            }
            let mut h = slot_of(p) & mask;
            while self.slots[h] != 0 {
                h = (h + 1) & mask;
            }
            self.slots[h] = c as u32 + 1;
        }
    }

    /// The rows so far as a dictionary array (the builder keeps its values
    /// for the next batch, so codes stay stable across batches).
    pub fn finish(
        &mut self,
    ) -> Result<DictionaryArray<UInt32Type>, deltalake::arrow::error::ArrowError> {
        self.resolve();
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

    /// A large dictionary (lookups pending) with rows cut while some are
    /// still pending, nulls and long values between them:
    /// every row reads back its own value and each value is in the
    /// dictionary once.
    #[test]
    fn rows_cut_while_lookups_are_pending_read_back_right() {
        let mut d = DictBuilder::default();
        let mut want: Vec<Option<String>> = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..60_000 {
            let r = rand();
            match r % 100 {
                0 => {
                    d.push_null();
                    want.push(None);
                }
                1 => {
                    let s = format!("a-long-machine-identifier-{}", r % 50);
                    d.push(s.as_bytes()).unwrap();
                    want.push(Some(s));
                }
                2..=4 => {
                    // Cut 0 to 20 of the last rows (some still pending).
                    let n = want.len().saturating_sub((r >> 8) as usize % 21);
                    d.truncate(n);
                    want.truncate(n);
                }
                _ => {
                    let s = format!("M{:05}", (r >> 16) % 20_000);
                    d.push(s.as_bytes()).unwrap();
                    want.push(Some(s));
                }
            }
        }
        assert!(d.slots.len() > 32_768, "a dictionary larger than L1");
        let a = d.finish().unwrap();
        assert_eq!(a.len(), want.len());
        let v = a.downcast_dict::<StringArray>().unwrap();
        for (row, w) in want.iter().enumerate() {
            match w {
                None => assert!(a.is_null(row), "row {row}"),
                Some(w) => assert_eq!(v.value(row), w.as_str(), "row {row}"),
            }
        }
        let values = a.values().as_any().downcast_ref::<StringArray>().unwrap();
        let distinct: std::collections::HashSet<&str> = values.iter().flatten().collect();
        assert_eq!(distinct.len(), values.len(), "each value once");
    }

    #[test]
    fn a_hundred_thousand_ids_keep_their_codes_through_every_growth() {
        let mut d = DictBuilder::default();
        let id = |i: usize| match i % 7 {
            0 => format!("machine-with-a-long-id-{i}"),
            1 => format!("{i:016}"),
            // 16 bytes ending in a byte that reads as a short length.
            2 => format!("{i:015}\u{4}"),
            // Short, and the same bytes as a 16-byte value's prefix.
            3 => format!("{i:015}"),
            _ => format!("M{i:06}"),
        };
        for round in 0..3 {
            for i in (0..100_000).rev() {
                d.push(id(i).as_bytes()).unwrap();
            }
            d.resolve();
            assert_eq!(d.len(), 100_000, "round {round}");
        }
        let a = d.finish().unwrap();
        let v = a.downcast_dict::<StringArray>().unwrap();
        for (row, i) in [
            (0usize, 99_999usize),
            (99_999, 0),
            (100_000 + 31_337, 99_999 - 31_337),
        ] {
            assert_eq!(a.keys().value(row), a.keys().value(row % 100_000));
            assert_eq!(v.value(row), id(i));
        }
    }
}
