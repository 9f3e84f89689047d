//! Dense key codes: every distinct string of a key column (machine id,
//! asset id) becomes a `u32` in `0..n`, so that per-key state lives in plain
//! vectors indexed by the code instead of hash maps on the hot path.
//!
//! Dictionary-encoded columns (what Parquet readers give for low-cardinality
//! strings) are interned per dictionary value, then mapped through the keys:
//! one hash per distinct value and batch, one array lookup per row.

use deltalake::arrow::array::{Array, AsArray, DictionaryArray, StringArray};
use deltalake::arrow::datatypes::{
    ArrowDictionaryKeyType, ArrowNativeType, DataType, Int16Type, Int32Type, Int64Type, Int8Type,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use foldhash::HashMap;
use foldhash::HashMapExt;

use super::TsError;

/// Key codes of one column, with the names behind them.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// One code per row; `u32::MAX` for a null key.
    pub codes: Vec<u32>,
    /// `names[code]`.
    pub names: Vec<String>,
}

impl Keys {
    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Intern one column on its own.
    pub fn from_array(column: &str, a: &dyn Array) -> Result<Keys, TsError> {
        let mut i = KeyInterner::default();
        let codes = i.intern(column, a)?;
        Ok(Keys {
            codes,
            names: i.into_names(),
        })
    }
}

/// Code of a null key.
pub const NULL_KEY: u32 = u32::MAX;

/// Interns key columns into one code space (so that two tables joined on the
/// key, e.g. readings and states, share codes).
#[derive(Debug, Default)]
pub struct KeyInterner {
    map: HashMap<String, u32>,
    names: Vec<String>,
}

impl KeyInterner {
    /// An interner with no keys.
    pub fn new() -> Self {
        KeyInterner {
            map: HashMap::new(),
            names: Vec::new(),
        }
    }

    /// Code of one string, adding it if new.
    pub fn code(&mut self, s: &str) -> u32 {
        if let Some(&c) = self.map.get(s) {
            return c;
        }
        let c = self.names.len() as u32;
        self.map.insert(s.to_string(), c);
        self.names.push(s.to_string());
        c
    }

    /// Code of a string if it was seen.
    pub fn get(&self, s: &str) -> Option<u32> {
        self.map.get(s).copied()
    }

    /// Number of keys so far.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no key was interned.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The names, indexed by code.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Give up the interner, keeping the names.
    pub fn into_names(self) -> Vec<String> {
        self.names
    }

    /// Codes of every row of a string column (Utf8, LargeUtf8, Utf8View or a
    /// dictionary of Utf8).
    pub fn intern(&mut self, column: &str, a: &dyn Array) -> Result<Vec<u32>, TsError> {
        let mut out = Vec::with_capacity(a.len());
        match a.data_type() {
            DataType::Utf8 => self.strings(a.as_string::<i32>().iter(), &mut out),
            DataType::LargeUtf8 => self.strings(a.as_string::<i64>().iter(), &mut out),
            DataType::Utf8View => self.strings(a.as_string_view().iter(), &mut out),
            DataType::Dictionary(k, v) if matches!(**v, DataType::Utf8) => match **k {
                DataType::Int8 => self.dict::<Int8Type>(a, &mut out),
                DataType::Int16 => self.dict::<Int16Type>(a, &mut out),
                DataType::Int32 => self.dict::<Int32Type>(a, &mut out),
                DataType::Int64 => self.dict::<Int64Type>(a, &mut out),
                DataType::UInt8 => self.dict::<UInt8Type>(a, &mut out),
                DataType::UInt16 => self.dict::<UInt16Type>(a, &mut out),
                DataType::UInt32 => self.dict::<UInt32Type>(a, &mut out),
                DataType::UInt64 => self.dict::<UInt64Type>(a, &mut out),
                _ => return Err(type_err(column, a)),
            },
            _ => return Err(type_err(column, a)),
        }
        Ok(out)
    }

    fn strings<'a>(&mut self, it: impl Iterator<Item = Option<&'a str>>, out: &mut Vec<u32>) {
        // Streams repeat keys in runs often enough that one comparison with
        // the previous row saves most hash lookups.
        let mut last: Option<(&str, u32)> = None;
        for s in it {
            let c = match s {
                None => NULL_KEY,
                Some(s) => match last {
                    Some((l, c)) if l == s => c,
                    _ => {
                        let c = self.code(s);
                        last = Some((s, c));
                        c
                    }
                },
            };
            out.push(c);
        }
    }

    fn dict<K: ArrowDictionaryKeyType>(&mut self, a: &dyn Array, out: &mut Vec<u32>) {
        let d: &DictionaryArray<K> = a.as_dictionary();
        let values: &StringArray = d.values().as_string();
        let map: Vec<u32> = values
            .iter()
            .map(|v| v.map_or(NULL_KEY, |s| self.code(s)))
            .collect();
        let keys = d.keys();
        if keys.null_count() == 0 {
            out.extend(keys.values().iter().map(|k| map[k.as_usize()]));
        } else {
            out.extend(
                keys.iter()
                    .map(|k| k.map_or(NULL_KEY, |k| map[k.as_usize()])),
            );
        }
    }
}

fn type_err(column: &str, a: &dyn Array) -> TsError {
    TsError::Type {
        column: column.to_string(),
        expected: "a string column",
        found: a.data_type().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::DictionaryArray;
    use deltalake::arrow::datatypes::Int32Type;

    #[test]
    fn plain_and_dictionary_columns_share_codes() {
        let mut i = KeyInterner::new();
        let a = StringArray::from(vec![Some("m1"), Some("m2"), None, Some("m1")]);
        assert_eq!(i.intern("a", &a).unwrap(), vec![0, 1, NULL_KEY, 0]);
        let d: DictionaryArray<Int32Type> = vec!["m2", "m3", "m2"].into_iter().collect();
        assert_eq!(i.intern("d", &d).unwrap(), vec![1, 2, 1]);
        assert_eq!(i.names(), ["m1", "m2", "m3"]);
        let n = deltalake::arrow::array::Int32Array::from(vec![1]);
        assert!(i.intern("n", &n).unwrap_err().to_string().contains("`n`"));
    }
}
