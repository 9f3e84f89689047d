//! Register maps: which blocks to read, and how words become engineering values
//! (and back, for the simulator). Pure functions, no I/O.

use super::config::{ModbusBinding, RegisterTable, RegisterType, WordOrder};
use crate::assets::SignalIdx;

/// Largest block read in one request (Modbus limits: 125 registers, 2000 coils).
const MAX_REGS: u16 = 125;
const MAX_COILS: u16 = 2000;
/// Registers skipped inside one block rather than starting a new request.
const MAX_GAP: u16 = 8;

/// One read request of the poll plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub table: RegisterTable,
    pub start: u16,
    pub count: u16,
}

/// Group bindings into as few read requests as possible.
pub fn plan(bindings: &[(SignalIdx, ModbusBinding)]) -> Vec<Block> {
    let mut out = Vec::new();
    for table in [
        RegisterTable::Holding,
        RegisterTable::Input,
        RegisterTable::Coil,
    ] {
        let max = if table == RegisterTable::Coil {
            MAX_COILS
        } else {
            MAX_REGS
        };
        let mut spans: Vec<(u16, u16)> = bindings
            .iter()
            .filter(|(_, b)| b.table == table)
            .map(|(_, b)| (b.address, b.address.saturating_add(b.register_type.width())))
            .collect();
        spans.sort_unstable();
        let mut cur: Option<(u16, u16)> = None;
        for (s, e) in spans {
            cur = match cur {
                Some((cs, ce)) if s <= ce.saturating_add(MAX_GAP) && e.max(ce) - cs <= max => {
                    Some((cs, e.max(ce)))
                }
                Some((cs, ce)) => {
                    out.push(Block {
                        table,
                        start: cs,
                        count: ce - cs,
                    });
                    Some((s, e))
                }
                None => Some((s, e)),
            };
        }
        if let Some((cs, ce)) = cur {
            out.push(Block {
                table,
                start: cs,
                count: ce - cs,
            });
        }
    }
    out
}

/// Raw 16-bit words of a 32-bit value in wire order -> (high, low).
fn hi_lo(words: &[u16], order: WordOrder) -> (u16, u16) {
    match order {
        WordOrder::Big => (words[0], words[1]),
        WordOrder::Little => (words[1], words[0]),
    }
}

/// Decode a register value (before scaling) from the words at its address.
/// Returns `None` when too few words are given.
pub fn decode_words(words: &[u16], t: RegisterType, order: WordOrder) -> Option<f64> {
    if words.len() < t.width() as usize {
        return None;
    }
    Some(match t {
        RegisterType::U16 => words[0] as f64,
        RegisterType::I16 => words[0] as i16 as f64,
        RegisterType::Bool => (words[0] != 0) as u8 as f64,
        RegisterType::U32 => {
            let (h, l) = hi_lo(words, order);
            (((h as u32) << 16) | l as u32) as f64
        }
        RegisterType::I32 => {
            let (h, l) = hi_lo(words, order);
            (((h as u32) << 16) | l as u32) as i32 as f64
        }
        RegisterType::F32 => {
            let (h, l) = hi_lo(words, order);
            f32::from_bits(((h as u32) << 16) | l as u32) as f64
        }
    })
}

/// Engineering value of a binding from the raw value.
pub fn scale(b: &ModbusBinding, raw: f64) -> f64 {
    raw * b.scale + b.offset
}

/// Encode an engineering value into words (the simulator's side). Values that do
/// not fit the register type saturate, as a PLC's conversion would.
pub fn encode(b: &ModbusBinding, value: f64) -> Vec<u16> {
    let raw = (value - b.offset) / b.scale;
    let split = |v: u32| -> Vec<u16> {
        let (h, l) = ((v >> 16) as u16, v as u16);
        match b.word_order {
            WordOrder::Big => vec![h, l],
            WordOrder::Little => vec![l, h],
        }
    };
    match b.register_type {
        RegisterType::U16 => vec![raw.round().clamp(0.0, u16::MAX as f64) as u16],
        RegisterType::I16 => {
            vec![raw.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16 as u16]
        }
        RegisterType::Bool => vec![(raw != 0.0) as u16],
        RegisterType::U32 => split(raw.round().clamp(0.0, u32::MAX as f64) as u32),
        RegisterType::I32 => {
            split(raw.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32 as u32)
        }
        RegisterType::F32 => split((raw as f32).to_bits()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(t: RegisterType, addr: u16, scale: f64, order: WordOrder) -> ModbusBinding {
        ModbusBinding {
            table: RegisterTable::Holding,
            address: addr,
            register_type: t,
            scale,
            offset: 0.0,
            word_order: order,
        }
    }

    #[test]
    fn round_trips_every_type_and_word_order() {
        for order in [WordOrder::Big, WordOrder::Little] {
            for (t, v, s) in [
                (RegisterType::U16, 1234.0, 1.0),
                (RegisterType::I16, -25.3, 0.1),
                (RegisterType::U32, 3_000_000_123.0, 1.0),
                (RegisterType::I32, -2_000_000.0, 1.0),
                (RegisterType::F32, 17.25, 1.0),
            ] {
                let bind = b(t, 0, s, order);
                let words = encode(&bind, v);
                let back = scale(&bind, decode_words(&words, t, order).unwrap());
                assert!(
                    (back - v).abs() < 1e-6 * v.abs().max(1.0),
                    "{t:?} {order:?}: {v} -> {back}"
                );
            }
        }
    }

    #[test]
    fn word_order_matters() {
        let words = [0x0001, 0x0000];
        assert_eq!(
            decode_words(&words, RegisterType::U32, WordOrder::Big),
            Some(65536.0)
        );
        assert_eq!(
            decode_words(&words, RegisterType::U32, WordOrder::Little),
            Some(1.0)
        );
    }

    #[test]
    fn out_of_range_values_saturate() {
        let bind = b(RegisterType::U16, 0, 1.0, WordOrder::Big);
        assert_eq!(encode(&bind, -5.0), vec![0]);
        assert_eq!(encode(&bind, 1e9), vec![u16::MAX]);
    }

    #[test]
    fn plan_merges_neighbours_and_splits_tables() {
        let binds = vec![
            (0, b(RegisterType::U16, 0, 1.0, WordOrder::Big)),
            (1, b(RegisterType::F32, 5, 1.0, WordOrder::Big)),
            (2, b(RegisterType::U16, 200, 1.0, WordOrder::Big)),
            (
                3,
                ModbusBinding {
                    table: RegisterTable::Coil,
                    ..b(RegisterType::Bool, 3, 1.0, WordOrder::Big)
                },
            ),
        ];
        let p = plan(&binds);
        assert_eq!(
            p,
            vec![
                Block {
                    table: RegisterTable::Holding,
                    start: 0,
                    count: 7
                },
                Block {
                    table: RegisterTable::Holding,
                    start: 200,
                    count: 1
                },
                Block {
                    table: RegisterTable::Coil,
                    start: 3,
                    count: 1
                },
            ]
        );
    }

    proptest::proptest! {
        /// Any words decode without panic; an encoded value decodes back.
        #[test]
        fn any_words_decode(words in proptest::collection::vec(proptest::prelude::any::<u16>(), 0..4),
                            t in 0usize..5, little in proptest::prelude::any::<bool>()) {
            let types = [RegisterType::U16, RegisterType::I16, RegisterType::U32, RegisterType::I32, RegisterType::F32];
            let order = if little { WordOrder::Little } else { WordOrder::Big };
            let d = decode_words(&words, types[t], order);
            proptest::prop_assert_eq!(d.is_some(), words.len() >= types[t].width() as usize);
            if let Some(raw) = d {
                if raw.is_finite() && types[t] != RegisterType::F32 {
                    let b = b(types[t], 0, 1.0, order);
                    proptest::prop_assert_eq!(decode_words(&encode(&b, raw), types[t], order), Some(raw));
                }
            }
        }
    }
}
