//! Parquet pages decoded by ironlake itself, for the files plants and
//! historians export most: flat columns of numbers, timestamps and text,
//! plain or dictionary-encoded, with or without nulls.
//!
//! arrow-rs's reader decodes every page into a batch-sized buffer of
//! dictionary indices, gathers them into another buffer, and copies those
//! into the batch's arrays. Here every column of the whole file is one
//! allocation of the file's row count, each (column, row group) is decoded on
//! the worker pool straight into its own range of it, and dictionary indices
//! are unpacked and looked up in the same step (one pass, no intermediate
//! buffer, no zeroing). Row-group batches are slices of those allocations.
//! Text stays as the file has it: dictionary pages become the row group's
//! dictionary (the indices are the keys), and plain text becomes string
//! views into the decompressed pages, without copying.
//!
//! Anything outside that subset (nested columns, other encodings such as
//! `DELTA_BINARY_PACKED`, booleans, decimals, a plain page in a column read
//! as a dictionary) is reported as [`Outcome::Unsupported`] and the caller
//! reads the file with arrow-rs; a page that does not decode is
//! [`Outcome::Corrupt`], and the caller lets arrow-rs give its own error.

use std::fs::File;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use deltalake::arrow::array::builder::make_view;
use deltalake::arrow::array::{
    Array, ArrayRef, BooleanBufferBuilder, DictionaryArray, Int32Array, PrimitiveArray,
    RecordBatch, RecordBatchOptions, StringArray, StringViewArray,
};
use deltalake::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use deltalake::arrow::datatypes::{ArrowPrimitiveType, DataType, Int32Type, SchemaRef, TimeUnit};
use deltalake::parquet::basic::{Encoding, Type as Physical};
use deltalake::parquet::column::page::{Page, PageReader};
use deltalake::parquet::errors::ParquetError;
use deltalake::parquet::file::metadata::ParquetMetaData;
use deltalake::parquet::file::reader::{ChunkReader, Length};
use deltalake::parquet::file::serialized_reader::SerializedPageReader;
use rayon::prelude::*;

/// Why the fast path did not produce the table.
#[derive(Debug)]
pub enum Outcome {
    /// The file uses something this decoder does not (the reason).
    Unsupported(String),
    /// A page did not decode (the reason).
    Corrupt(String),
}

impl From<ParquetError> for Outcome {
    fn from(e: ParquetError) -> Self {
        match e {
            ParquetError::NYI(m) => Outcome::Unsupported(m),
            e => Outcome::Corrupt(e.to_string()),
        }
    }
}

fn corrupt(m: impl Into<String>) -> Outcome {
    Outcome::Corrupt(m.into())
}

/// What a column is decoded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    I32,
    I64,
    F32,
    F64,
    /// Text as `Dictionary(Int32, Utf8)`: every page must be dictionary-encoded.
    Dict,
    /// Text as `Utf8View`.
    View,
}

fn kind_of(physical: Physical, target: &DataType) -> Option<Kind> {
    Some(match (physical, target) {
        (Physical::INT32, DataType::Int32 | DataType::Date32) => Kind::I32,
        (Physical::INT64, DataType::Int64 | DataType::Timestamp(..)) => Kind::I64,
        (Physical::FLOAT, DataType::Float32) => Kind::F32,
        (Physical::DOUBLE, DataType::Float64) => Kind::F64,
        (Physical::BYTE_ARRAY, DataType::Dictionary(k, v))
            if **k == DataType::Int32 && **v == DataType::Utf8 =>
        {
            Kind::Dict
        }
        (Physical::BYTE_ARRAY, DataType::Utf8View) => Kind::View,
        _ => return None,
    })
}

/// One column chunk of a file, read with one `pread`, as the page reader's
/// source (offsets are the file's).
struct Chunk {
    start: u64,
    data: Bytes,
}

impl Chunk {
    fn range(&self, start: u64, len: usize) -> Result<Bytes, ParquetError> {
        let from = start
            .checked_sub(self.start)
            .map(|s| s as usize)
            .filter(|s| s.saturating_add(len) <= self.data.len())
            .ok_or_else(|| {
                ParquetError::EOF(format!(
                    "{len} bytes at {start} are outside the column chunk"
                ))
            })?;
        Ok(self.data.slice(from..from + len))
    }
}

impl Length for Chunk {
    fn len(&self) -> u64 {
        self.start + self.data.len() as u64
    }
}

impl ChunkReader for Chunk {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        let rest = (self.len().saturating_sub(start)) as usize;
        Ok(self.range(start, rest)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        self.range(start, length)
    }
}

/// A fixed-width value as Parquet's PLAIN encoding stores it.
trait Plain: Copy + Default + Send + Sync + 'static {
    const SIZE: usize;
    fn from_le(b: &[u8]) -> Self;
}

macro_rules! plain {
    ($($t:ty),*) => {$(
        impl Plain for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn from_le(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("chunks of SIZE"))
            }
        }
    )*};
}
plain!(i32, i64, f32, f64);

/// Where dictionary indices go: looked up in decoded dictionary values, or
/// kept as the keys of a dictionary array.
trait Lookup<T>: Sync {
    fn get(&self, idx: usize) -> Option<T>;
}

impl<T: Copy + Sync> Lookup<T> for [T] {
    #[inline(always)]
    fn get(&self, idx: usize) -> Option<T> {
        <[T]>::get(self, idx).copied()
    }
}

/// Indices as keys, below the dictionary's length.
struct Keys(usize);

impl Lookup<i32> for Keys {
    #[inline(always)]
    fn get(&self, idx: usize) -> Option<i32> {
        (idx < self.0).then_some(idx as i32)
    }
}

/// Unsigned LEB128 at `*pos`.
fn uleb(data: &[u8], pos: &mut usize) -> Result<u64, Outcome> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data
            .get(*pos)
            .ok_or_else(|| corrupt("truncated run header"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(corrupt("run header longer than 64 bits"))
}

/// Bit-packed groups of 8 values of `BW` bits (LSB first), looked up and
/// written to `out` (whose length may end inside the last group).
#[inline(always)]
fn unpack<const BW: usize, T: Copy, L: Lookup<T> + ?Sized>(
    src: &[u8],
    dict: &L,
    out: &mut [MaybeUninit<T>],
) -> Result<(), Outcome> {
    let mask: u64 = if BW == 64 { u64::MAX } else { (1u64 << BW) - 1 };
    let groups = out.len().div_ceil(8);
    if src.len() < groups * BW {
        return Err(corrupt("bit-packed run shorter than its header says"));
    }
    let mut ok = true;
    // Groups whose every 8-byte load stays inside `src` read it directly.
    let direct = if src.len() >= 8 + BW {
        ((src.len() - 8) / BW).min(out.len() / 8)
    } else {
        0
    };
    for (g, vals) in out[..direct * 8].chunks_exact_mut(8).enumerate() {
        let base = &src[g * BW..];
        for (j, v) in vals.iter_mut().enumerate() {
            let bit = j * BW;
            let w = u64::from_le_bytes(base[bit / 8..bit / 8 + 8].try_into().expect("8 bytes"));
            match dict.get(((w >> (bit % 8)) & mask) as usize) {
                Some(x) => {
                    v.write(x);
                }
                None => ok = false,
            }
        }
    }
    // The rest through a zero-padded copy of each group.
    for (g, vals) in out[direct * 8..].chunks_mut(8).enumerate() {
        let from = (direct + g) * BW;
        let mut buf = [0u8; 48];
        buf[..BW].copy_from_slice(&src[from..from + BW]);
        for (j, v) in vals.iter_mut().enumerate() {
            let bit = j * BW;
            let w = u64::from_le_bytes(buf[bit / 8..bit / 8 + 8].try_into().expect("8 bytes"));
            match dict.get(((w >> (bit % 8)) & mask) as usize) {
                Some(x) => {
                    v.write(x);
                }
                None => ok = false,
            }
        }
    }
    if ok {
        Ok(())
    } else {
        Err(corrupt("dictionary index out of range"))
    }
}

macro_rules! dispatch_unpack {
    ($bw:expr, $src:expr, $dict:expr, $out:expr; $($n:literal)*) => {
        match $bw {
            $($n => unpack::<$n, _, _>($src, $dict, $out),)*
            w => Err(corrupt(format!("bit width {w} above 32"))),
        }
    };
}

/// Decode RLE / bit-packed hybrid indices of `bw` bits, each looked up in
/// `dict`, until `out` is full.
fn hybrid<T: Copy, L: Lookup<T> + ?Sized>(
    data: &[u8],
    bw: usize,
    dict: &L,
    out: &mut [MaybeUninit<T>],
) -> Result<(), Outcome> {
    let mut pos = 0;
    let mut done = 0;
    while done < out.len() {
        let header = uleb(data, &mut pos)?;
        let rest = &mut out[done..];
        if header & 1 == 1 {
            let groups = usize::try_from(header >> 1).map_err(|_| corrupt("run too long"))?;
            let n = groups.saturating_mul(8).min(rest.len());
            let bytes = groups.saturating_mul(bw);
            let src = data
                .get(pos..pos.saturating_add(bytes))
                .ok_or_else(|| corrupt("bit-packed run past the page's end"))?;
            if bw == 0 {
                let x = dict.get(0).ok_or_else(|| corrupt("empty dictionary"))?;
                rest[..n].iter_mut().for_each(|v| {
                    v.write(x);
                });
            } else {
                dispatch_unpack!(bw, src, dict, &mut rest[..n];
                    1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32)?;
            }
            pos += bytes;
            done += n;
        } else {
            let n = usize::try_from(header >> 1)
                .map_err(|_| corrupt("run too long"))?
                .min(rest.len());
            if n == 0 {
                return Err(corrupt("empty run"));
            }
            let width = bw.div_ceil(8);
            let raw = data
                .get(pos..pos + width)
                .ok_or_else(|| corrupt("run value past the page's end"))?;
            let mut le = [0u8; 8];
            le[..width].copy_from_slice(raw);
            pos += width;
            let x = dict
                .get(u64::from_le_bytes(le) as usize)
                .ok_or_else(|| corrupt("dictionary index out of range"))?;
            rest[..n].iter_mut().for_each(|v| {
                v.write(x);
            });
            done += n;
        }
    }
    Ok(())
}

/// Definition levels (bit width 1) of `n` rows appended to `bits`; returns
/// how many are 1 (values present).
fn levels(data: &[u8], n: usize, bits: &mut BooleanBufferBuilder) -> Result<usize, Outcome> {
    let mut pos = 0;
    let mut done = 0;
    let mut valid = 0;
    while done < n {
        let header = uleb(data, &mut pos)?;
        if header & 1 == 1 {
            let groups = usize::try_from(header >> 1).map_err(|_| corrupt("run too long"))?;
            let take = groups.saturating_mul(8).min(n - done);
            let src = data
                .get(pos..pos.saturating_add(groups))
                .ok_or_else(|| corrupt("level run past the page's end"))?;
            bits.append_packed_range(0..take, src);
            let full = take / 8;
            valid += src[..full]
                .iter()
                .map(|b| b.count_ones() as usize)
                .sum::<usize>();
            if take % 8 != 0 {
                valid += (src[full] & ((1u8 << (take % 8)) - 1)).count_ones() as usize;
            }
            pos += groups;
            done += take;
        } else {
            let run = usize::try_from(header >> 1).map_err(|_| corrupt("run too long"))?;
            let take = run.min(n - done);
            if take == 0 {
                return Err(corrupt("empty level run"));
            }
            let v = *data
                .get(pos)
                .ok_or_else(|| corrupt("level past the page's end"))?;
            pos += 1;
            if v > 1 {
                return Err(corrupt(format!("definition level {v} of a flat column")));
            }
            bits.append_n(take, v == 1);
            if v == 1 {
                valid += take;
            }
            done += take;
        }
    }
    Ok(valid)
}

/// True when the levels are one run of `1` covering `n` rows (no nulls).
fn all_present(data: &[u8], n: usize) -> bool {
    let mut pos = 0;
    match uleb(data, &mut pos) {
        Ok(h) if h & 1 == 0 => (h >> 1) as usize >= n && data.get(pos) == Some(&1),
        _ => false,
    }
}

/// What decoding one column chunk leaves besides the values.
#[derive(Default)]
struct ChunkOut {
    nulls: Option<NullBuffer>,
    /// The row group's dictionary (text read as a dictionary array).
    dictionary: Option<StringArray>,
    /// Buffers the string views point into.
    buffers: Vec<Buffer>,
}

/// How the values of one kind are decoded.
trait Decode: Copy + Default + Send + Sync + 'static {
    type Dict: Send;
    fn dictionary(page: &Bytes, n: usize, out: &mut ChunkOut) -> Result<Self::Dict, Outcome>;
    /// `n` values of a data page (`body`, inside the page buffer `page`).
    fn values(
        encoding: Encoding,
        page: &Bytes,
        body: &[u8],
        dict: Option<&Self::Dict>,
        out: &mut [MaybeUninit<Self>],
        chunk: &mut ChunkOut,
    ) -> Result<(), Outcome>;
}

fn dictionary_indices<T: Copy, L: Lookup<T> + ?Sized>(
    body: &[u8],
    dict: &L,
    out: &mut [MaybeUninit<T>],
) -> Result<(), Outcome> {
    if out.is_empty() {
        return Ok(());
    }
    let (&bw, rest) = body
        .split_first()
        .ok_or_else(|| corrupt("dictionary-encoded page without a bit width"))?;
    hybrid(rest, bw as usize, dict, out)
}

fn plain_values<T: Plain>(body: &[u8], out: &mut [MaybeUninit<T>]) -> Result<(), Outcome> {
    let bytes = out.len() * T::SIZE;
    let src = body
        .get(..bytes)
        .ok_or_else(|| corrupt("plain values past the page's end"))?;
    for (o, c) in out.iter_mut().zip(src.chunks_exact(T::SIZE)) {
        o.write(T::from_le(c));
    }
    Ok(())
}

fn is_dictionary(e: Encoding) -> bool {
    matches!(e, Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY)
}

impl<T: Plain> Decode for T {
    type Dict = Vec<T>;

    fn dictionary(page: &Bytes, n: usize, _: &mut ChunkOut) -> Result<Vec<T>, Outcome> {
        let mut v = Vec::with_capacity(n);
        plain_values(page, &mut v.spare_capacity_mut()[..n])?;
        // SAFETY: plain_values wrote all n values or returned an error.
        unsafe { v.set_len(n) };
        Ok(v)
    }

    fn values(
        encoding: Encoding,
        _: &Bytes,
        body: &[u8],
        dict: Option<&Vec<T>>,
        out: &mut [MaybeUninit<T>],
        _: &mut ChunkOut,
    ) -> Result<(), Outcome> {
        match encoding {
            Encoding::PLAIN => plain_values(body, out),
            e if is_dictionary(e) => {
                let d =
                    dict.ok_or_else(|| corrupt("dictionary-encoded page before a dictionary"))?;
                dictionary_indices(body, d.as_slice(), out)
            }
            e => Err(Outcome::Unsupported(format!("{e:?} pages"))),
        }
    }
}

/// `n` length-prefixed byte strings of a PLAIN page, each checked as UTF-8.
fn byte_strings(
    data: &[u8],
    n: usize,
    mut each: impl FnMut(usize, &[u8]),
) -> Result<usize, Outcome> {
    // Text that is all ASCII, length prefixes included (every string
    // shorter than 128 bytes), is valid UTF-8: one pass over the page
    // instead of one check per string.
    let ascii = data.is_ascii();
    let mut pos = 0;
    for _ in 0..n {
        let len = data
            .get(pos..pos + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| corrupt("string length past the page's end"))?;
        let s = data
            .get(pos + 4..pos + 4 + len)
            .ok_or_else(|| corrupt("string past the page's end"))?;
        if !ascii {
            std::str::from_utf8(s).map_err(|e| corrupt(format!("text that is not UTF-8: {e}")))?;
        }
        each(pos + 4, s);
        pos += 4 + len;
    }
    Ok(pos)
}

/// Offset of `body` inside `page`.
fn offset_in(page: &Bytes, body: &[u8]) -> usize {
    body.as_ptr() as usize - page.as_ptr() as usize
}

/// Text read as string views (`u128`): dictionary entries and plain values
/// point into the decompressed pages.
impl Decode for u128 {
    type Dict = Vec<u128>;

    fn dictionary(page: &Bytes, n: usize, chunk: &mut ChunkOut) -> Result<Vec<u128>, Outcome> {
        let block = chunk.buffers.len() as u32;
        let mut views = Vec::with_capacity(n);
        let mut long = false;
        byte_strings(page, n, |at, s| {
            long |= s.len() > 12;
            views.push(make_view(s, block, at as u32));
        })?;
        if long {
            chunk.buffers.push(Buffer::from(page.clone()));
        }
        Ok(views)
    }

    fn values(
        encoding: Encoding,
        page: &Bytes,
        body: &[u8],
        dict: Option<&Vec<u128>>,
        out: &mut [MaybeUninit<u128>],
        chunk: &mut ChunkOut,
    ) -> Result<(), Outcome> {
        match encoding {
            Encoding::PLAIN => {
                let block = chunk.buffers.len() as u32;
                let base = offset_in(page, body);
                let mut long = false;
                let mut i = 0;
                byte_strings(body, out.len(), |at, s| {
                    long |= s.len() > 12;
                    out[i].write(make_view(s, block, (base + at) as u32));
                    i += 1;
                })?;
                if long {
                    chunk.buffers.push(Buffer::from(page.clone()));
                }
                Ok(())
            }
            e if is_dictionary(e) => {
                let d =
                    dict.ok_or_else(|| corrupt("dictionary-encoded page before a dictionary"))?;
                dictionary_indices(body, d.as_slice(), out)
            }
            e => Err(Outcome::Unsupported(format!("{e:?} text pages"))),
        }
    }
}

/// Text read as a dictionary array: the keys.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct Key(i32);

impl Decode for Key {
    type Dict = usize;

    fn dictionary(page: &Bytes, n: usize, chunk: &mut ChunkOut) -> Result<usize, Outcome> {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0i32);
        let mut values = Vec::with_capacity(page.len());
        byte_strings(page, n, |_, s| {
            values.extend_from_slice(s);
            offsets.push(values.len() as i32);
        })?;
        if values.len() > i32::MAX as usize {
            return Err(Outcome::Unsupported("a dictionary above 2 GiB".into()));
        }
        // SAFETY: the offsets grow from 0 to the values' length and every
        // value was checked as UTF-8 by byte_strings.
        let text = unsafe {
            StringArray::new_unchecked(
                OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets)),
                Buffer::from_vec(values),
                None,
            )
        };
        chunk.dictionary = Some(text);
        Ok(n)
    }

    fn values(
        encoding: Encoding,
        _: &Bytes,
        body: &[u8],
        dict: Option<&usize>,
        out: &mut [MaybeUninit<Key>],
        _: &mut ChunkOut,
    ) -> Result<(), Outcome> {
        if !is_dictionary(encoding) {
            return Err(Outcome::Unsupported(format!(
                "{encoding:?} pages in a text column read as a dictionary"
            )));
        }
        let n = *dict.ok_or_else(|| corrupt("dictionary-encoded page before a dictionary"))?;
        // SAFETY: Key is a repr(transparent) wrapper of i32.
        let out = unsafe {
            std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut MaybeUninit<i32>, out.len())
        };
        dictionary_indices(body, &Keys(n), out)
    }
}

/// Decode one column chunk (`rows` rows) into `out`.
fn decode_chunk<T: Decode>(
    chunk: Chunk,
    meta: &ParquetMetaData,
    rg: usize,
    col: usize,
    out: &mut [MaybeUninit<T>],
) -> Result<ChunkOut, Outcome> {
    let cc = meta.row_group(rg).column(col);
    let nullable = cc.column_descr().max_def_level() == 1;
    let rows = out.len();
    let mut pages = SerializedPageReader::new(Arc::new(chunk), cc, rows, None)?;
    let mut res = ChunkOut::default();
    let mut dict: Option<T::Dict> = None;
    // Validity of the rows so far, started at the first null.
    let mut bits: Option<BooleanBufferBuilder> = None;
    let mut scratch: Vec<T> = Vec::new();
    let mut done = 0;
    while let Some(page) = pages.get_next_page()? {
        let (buf, n, encoding, levels_bytes, body_at) = match &page {
            Page::DictionaryPage {
                buf,
                num_values,
                encoding,
                ..
            } => {
                if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) {
                    return Err(Outcome::Unsupported(format!(
                        "{encoding:?} dictionary pages"
                    )));
                }
                dict = Some(T::dictionary(buf, *num_values as usize, &mut res)?);
                continue;
            }
            Page::DataPage {
                buf,
                num_values,
                encoding,
                def_level_encoding,
                ..
            } => {
                if !nullable {
                    (buf, *num_values as usize, *encoding, 0..0, 0)
                } else {
                    if *def_level_encoding != Encoding::RLE {
                        return Err(Outcome::Unsupported(format!(
                            "{def_level_encoding:?} definition levels"
                        )));
                    }
                    let len = buf
                        .get(..4)
                        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                        .ok_or_else(|| corrupt("page without its levels"))?;
                    (buf, *num_values as usize, *encoding, 4..4 + len, 4 + len)
                }
            }
            Page::DataPageV2 {
                buf,
                num_values,
                encoding,
                def_levels_byte_len,
                rep_levels_byte_len,
                ..
            } => {
                let rep = *rep_levels_byte_len as usize;
                let def = *def_levels_byte_len as usize;
                (
                    buf,
                    *num_values as usize,
                    *encoding,
                    rep..rep + def,
                    rep + def,
                )
            }
        };
        if done + n > rows {
            return Err(corrupt(format!(
                "pages hold more than the row group's {rows} rows"
            )));
        }
        let level_data = buf
            .get(levels_bytes.clone())
            .ok_or_else(|| corrupt("levels past the page's end"))?;
        let body = buf
            .get(body_at..)
            .ok_or_else(|| corrupt("values past the page's end"))?;
        let dst = &mut out[done..done + n];
        if !nullable || (bits.is_none() && all_present(level_data, n)) {
            T::values(encoding, buf, body, dict.as_ref(), dst, &mut res)?;
        } else {
            let b = bits.get_or_insert_with(|| {
                let mut b = BooleanBufferBuilder::new(rows);
                b.append_n(done, true);
                b
            });
            let valid = levels(level_data, n, b)?;
            scratch.clear();
            scratch.reserve(valid);
            T::values(
                encoding,
                buf,
                body,
                dict.as_ref(),
                &mut scratch.spare_capacity_mut()[..valid],
                &mut res,
            )?;
            // SAFETY: values() wrote all `valid` elements or returned an error.
            unsafe { scratch.set_len(valid) };
            let page_bits = b.as_slice();
            let mut k = 0;
            for (i, d) in dst.iter_mut().enumerate() {
                let row = done + i;
                if page_bits[row / 8] >> (row % 8) & 1 == 1 {
                    d.write(scratch[k]);
                    k += 1;
                } else {
                    d.write(T::default());
                }
            }
        }
        done += n;
    }
    if done != rows {
        return Err(corrupt(format!(
            "pages hold {done} of the row group's {rows} rows"
        )));
    }
    res.nulls = bits.map(|mut b| NullBuffer::new(b.finish()));
    Ok(res)
}

/// A column's values for the whole file, before and after decoding.
enum Column {
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Key(Vec<Key>),
    View(Vec<u128>),
}

enum Dst<'a> {
    I32(&'a mut [MaybeUninit<i32>]),
    I64(&'a mut [MaybeUninit<i64>]),
    F32(&'a mut [MaybeUninit<f32>]),
    F64(&'a mut [MaybeUninit<f64>]),
    Key(&'a mut [MaybeUninit<Key>]),
    View(&'a mut [MaybeUninit<u128>]),
}

/// Split `v`'s spare capacity into the row groups' ranges.
fn ranges<'a, T>(
    v: &'a mut Vec<T>,
    rows: &[usize],
    wrap: impl Fn(&'a mut [MaybeUninit<T>]) -> Dst<'a>,
) -> Vec<Dst<'a>> {
    let mut rest = &mut v.spare_capacity_mut()[..rows.iter().sum::<usize>()];
    let mut out = Vec::with_capacity(rows.len());
    for &r in rows {
        let (a, b) = rest.split_at_mut(r);
        out.push(wrap(a));
        rest = b;
    }
    out
}

/// Read one column chunk's bytes.
fn read_chunk(
    file: &File,
    meta: &ParquetMetaData,
    rg: usize,
    col: usize,
) -> Result<Chunk, Outcome> {
    let (start, len) = meta.row_group(rg).column(col).byte_range();
    let mut data = vec![0u8; len as usize];
    file.read_exact_at(&mut data, start)
        .map_err(|e| corrupt(format!("reading a column chunk: {e}")))?;
    Ok(Chunk {
        start,
        data: Bytes::from(data),
    })
}

/// Read columns `columns` (indices into `schema`) of row groups `groups`
/// of a flat Parquet file into one batch per row group, with the column
/// types of `schema` (the file's columns, as [`super::parquet`] chose to
/// read them), or say why not. Pages of other columns are not read.
pub fn read(
    file: &File,
    meta: &ParquetMetaData,
    schema: &SchemaRef,
    columns: &[usize],
    groups: Range<usize>,
    threads: usize,
) -> Result<Vec<RecordBatch>, Outcome> {
    let descr = meta.file_metadata().schema_descr();
    if descr.num_columns() != schema.fields().len() {
        return Err(Outcome::Unsupported("nested columns".into()));
    }
    let groups = groups.start.min(meta.num_row_groups())..groups.end.min(meta.num_row_groups());
    let schema = Arc::new(
        schema
            .project(columns)
            .map_err(|e| corrupt(e.to_string()))?,
    );
    let mut kinds = Vec::with_capacity(columns.len());
    for (&i, f) in columns.iter().zip(schema.fields()) {
        let c = descr.column(i);
        if c.max_rep_level() != 0 || c.max_def_level() > 1 || c.path().parts().len() != 1 {
            return Err(Outcome::Unsupported(format!("nested column {}", c.path())));
        }
        let k = kind_of(c.physical_type(), f.data_type()).ok_or_else(|| {
            Outcome::Unsupported(format!(
                "column {} ({} as {})",
                f.name(),
                c.physical_type(),
                f.data_type()
            ))
        })?;
        kinds.push(k);
    }
    let rows: Vec<usize> = meta.row_groups()[groups.clone()]
        .iter()
        .map(|rg| rg.num_rows().max(0) as usize)
        .collect();
    let total: usize = rows.iter().sum();
    let mut store: Vec<Column> = kinds
        .iter()
        .map(|k| match k {
            Kind::I32 => Column::I32(Vec::with_capacity(total)),
            Kind::I64 => Column::I64(Vec::with_capacity(total)),
            Kind::F32 => Column::F32(Vec::with_capacity(total)),
            Kind::F64 => Column::F64(Vec::with_capacity(total)),
            Kind::Dict => Column::Key(Vec::with_capacity(total)),
            Kind::View => Column::View(Vec::with_capacity(total)),
        })
        .collect();
    // (column, row group, destination), largest chunks first.
    let mut tasks: Vec<(usize, usize, Dst)> = Vec::new();
    for (c, col) in store.iter_mut().enumerate() {
        let dsts = match col {
            Column::I32(v) => ranges(v, &rows, Dst::I32),
            Column::I64(v) => ranges(v, &rows, Dst::I64),
            Column::F32(v) => ranges(v, &rows, Dst::F32),
            Column::F64(v) => ranges(v, &rows, Dst::F64),
            Column::Key(v) => ranges(v, &rows, Dst::Key),
            Column::View(v) => ranges(v, &rows, Dst::View),
        };
        tasks.extend(dsts.into_iter().enumerate().map(|(g, d)| (c, g, d)));
    }
    // (output column, row group of the range): the file's column and row group.
    let at = |c: usize, g: usize| (columns[c], groups.start + g);
    tasks.sort_by_key(|&(c, g, _)| {
        let (fc, rg) = at(c, g);
        std::cmp::Reverse(meta.row_group(rg).column(fc).compressed_size())
    });
    let run = |(c, g, dst): (usize, usize, Dst)| -> Result<(usize, usize, ChunkOut), Outcome> {
        let (fc, rg) = at(c, g);
        let chunk = read_chunk(file, meta, rg, fc)?;
        let out = match dst {
            Dst::I32(o) => decode_chunk(chunk, meta, rg, fc, o),
            Dst::I64(o) => decode_chunk(chunk, meta, rg, fc, o),
            Dst::F32(o) => decode_chunk(chunk, meta, rg, fc, o),
            Dst::F64(o) => decode_chunk(chunk, meta, rg, fc, o),
            Dst::Key(o) => decode_chunk(chunk, meta, rg, fc, o),
            Dst::View(o) => decode_chunk(chunk, meta, rg, fc, o),
        }?;
        Ok((c, g, out))
    };
    let results: Vec<Result<(usize, usize, ChunkOut), Outcome>> = if threads <= 1 {
        tasks.into_iter().map(run).collect()
    } else {
        tasks.into_par_iter().map(run).collect()
    };
    let mut outs: Vec<Vec<Option<ChunkOut>>> = (0..store.len())
        .map(|_| (0..rows.len()).map(|_| None).collect())
        .collect();
    for r in results {
        let (c, rg, o) = r?;
        outs[c][rg] = Some(o);
    }
    // Every range of every column is written: the vectors hold `total` values.
    let buffers: Vec<Buffer> = store
        .into_iter()
        .map(|col| {
            // SAFETY: every task above returned Ok, and each wrote every
            // element of its row group's range; the ranges cover 0..total.
            unsafe {
                match col {
                    Column::I32(mut v) => {
                        v.set_len(total);
                        Buffer::from_vec(v)
                    }
                    Column::I64(mut v) => {
                        v.set_len(total);
                        Buffer::from_vec(v)
                    }
                    Column::F32(mut v) => {
                        v.set_len(total);
                        Buffer::from_vec(v)
                    }
                    Column::F64(mut v) => {
                        v.set_len(total);
                        Buffer::from_vec(v)
                    }
                    Column::Key(mut v) => {
                        v.set_len(total);
                        // Key is a repr(transparent) wrapper of i32.
                        let mut v = std::mem::ManuallyDrop::new(v);
                        let keys =
                            Vec::from_raw_parts(v.as_mut_ptr() as *mut i32, v.len(), v.capacity());
                        Buffer::from_vec(keys)
                    }
                    Column::View(mut v) => {
                        v.set_len(total);
                        Buffer::from_vec(v)
                    }
                }
            }
        })
        .collect();
    let mut batches = Vec::with_capacity(rows.len());
    let mut at = 0;
    for (rg, &n) in rows.iter().enumerate() {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(kinds.len());
        for (c, k) in kinds.iter().enumerate() {
            let o = outs[c][rg].take().expect("every chunk decoded");
            let t = schema.field(c).data_type();
            arrays.push(make_array(*k, t, &buffers[c], at, n, o).map_err(corrupt)?);
        }
        let batch = RecordBatch::try_new_with_options(
            schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(|e| corrupt(e.to_string()))?;
        batches.push(batch);
        at += n;
    }
    Ok(batches)
}

fn primitive<P: ArrowPrimitiveType>(
    buf: &Buffer,
    at: usize,
    n: usize,
    nulls: Option<NullBuffer>,
) -> PrimitiveArray<P> {
    PrimitiveArray::<P>::new(ScalarBuffer::new(buf.clone(), at, n), nulls)
}

fn make_array(
    kind: Kind,
    t: &DataType,
    buf: &Buffer,
    at: usize,
    n: usize,
    o: ChunkOut,
) -> Result<ArrayRef, String> {
    use deltalake::arrow::datatypes as dt;
    Ok(match kind {
        Kind::I32 => match t {
            DataType::Date32 => Arc::new(primitive::<dt::Date32Type>(buf, at, n, o.nulls)),
            _ => Arc::new(primitive::<Int32Type>(buf, at, n, o.nulls)) as ArrayRef,
        },
        Kind::I64 => match t {
            DataType::Timestamp(unit, tz) => {
                let tz = tz.clone();
                match unit {
                    TimeUnit::Second => Arc::new(
                        primitive::<dt::TimestampSecondType>(buf, at, n, o.nulls)
                            .with_timezone_opt(tz),
                    ),
                    TimeUnit::Millisecond => Arc::new(
                        primitive::<dt::TimestampMillisecondType>(buf, at, n, o.nulls)
                            .with_timezone_opt(tz),
                    ),
                    TimeUnit::Microsecond => Arc::new(
                        primitive::<dt::TimestampMicrosecondType>(buf, at, n, o.nulls)
                            .with_timezone_opt(tz),
                    ),
                    TimeUnit::Nanosecond => Arc::new(
                        primitive::<dt::TimestampNanosecondType>(buf, at, n, o.nulls)
                            .with_timezone_opt(tz),
                    ) as ArrayRef,
                }
            }
            _ => Arc::new(primitive::<dt::Int64Type>(buf, at, n, o.nulls)),
        },
        Kind::F32 => Arc::new(primitive::<dt::Float32Type>(buf, at, n, o.nulls)) as ArrayRef,
        Kind::F64 => Arc::new(primitive::<dt::Float64Type>(buf, at, n, o.nulls)),
        Kind::Dict => {
            let keys: Int32Array = primitive(buf, at, n, o.nulls);
            let values = o
                .dictionary
                .unwrap_or_else(|| StringArray::from(Vec::<&str>::new()));
            if n > 0 && values.is_empty() && keys.null_count() < n {
                return Err("values without a dictionary".into());
            }
            // Keys were checked against the dictionary's length as they
            // were decoded; nulls hold key 0.
            let d = if values.is_empty() {
                DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values))
                    .map_err(|e| e.to_string())?
            } else {
                // SAFETY: every non-null key is below values.len() (Keys
                // lookup), and null slots hold 0, also in range.
                unsafe { DictionaryArray::<Int32Type>::new_unchecked(keys, Arc::new(values)) }
            };
            Arc::new(d)
        }
        Kind::View => {
            let views = ScalarBuffer::<u128>::new(buf.clone(), at, n);
            // SAFETY: every view was made by make_view from a string checked
            // as UTF-8, pointing into the buffer pushed after it (block
            // index = buffers' length then); null slots hold the empty view.
            Arc::new(unsafe { StringViewArray::new_unchecked(views, o.buffers, o.nulls) })
        }
    })
}
