//! Bounded readers and writers for the byte formats on the wire.
//!
//! Every read checks what is left first and fails with a [`WireError`]: network input can be
//! truncated or hostile, and must never panic or make us allocate on its say-so. Serde values
//! (messages, components with the default codec) travel as bincode 2 with its standard
//! configuration, decoded under a limit ([`decode_serde`]).

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes from a peer could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended in the middle of a value.
    Truncated,
    /// A variable-length integer was longer than its type allows.
    BadVarint,
    /// A value was read but is out of the range this format allows.
    OutOfRange(&'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("input ends in the middle of a value"),
            WireError::BadVarint => f.write_str("malformed variable-length integer"),
            WireError::OutOfRange(what) => write!(f, "{what} is out of range"),
        }
    }
}

impl std::error::Error for WireError {}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// What is left, without consuming it.
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        let byte = *self.buf.get(self.pos).ok_or(WireError::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        if len > self.remaining() {
            return Err(WireError::Truncated);
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let slice = self.bytes(N)?;
        let mut out = [0; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// LEB128, at most 10 bytes, rejecting encodings that overflow 64 bits.
    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64, WireError> {
        let (value, len) = parse_varint(self.rest())?;
        self.pos += len;
        Ok(value)
    }

    /// A varint that must fit `max`.
    pub(crate) fn varint_max(&mut self, max: u64, what: &'static str) -> Result<u64, WireError> {
        let value = self.varint()?;
        if value > max {
            return Err(WireError::OutOfRange(what));
        }
        Ok(value)
    }
}

/// The LEB128 value at the front of `bytes`, at most 10 bytes long, and how many bytes it took;
/// an encoding that overflows 64 bits is an error.
#[inline]
pub(crate) fn parse_varint(bytes: &[u8]) -> Result<(u64, usize), WireError> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().take(10).enumerate() {
        if i == 9 && byte > 1 {
            return Err(WireError::BadVarint);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(if bytes.len() >= 10 {
        WireError::BadVarint
    } else {
        WireError::Truncated
    })
}

/// Most bytes one serde decode may claim for the values it builds, whatever lengths the input
/// announces: a hostile peer cannot make us allocate more than this per message or value.
pub(crate) const DECODE_LIMIT: usize = 16 << 20;

/// Encodes a serde value the way every message and serde component travels.
pub(crate) fn encode_serde<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| e.to_string())
}

/// Appends a serde value to `out`.
pub(crate) fn encode_serde_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Decodes one serde value from the front of untrusted bytes, bounded by [`DECODE_LIMIT`];
/// returns it and how many bytes it took.
pub(crate) fn decode_serde_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), String> {
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    bincode::serde::decode_from_slice(bytes, config).map_err(|e| e.to_string())
}

/// Decodes a serde value that must use every byte of `bytes`.
pub(crate) fn decode_serde<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, read) = decode_serde_prefix(bytes)?;
    if read != bytes.len() {
        return Err(format!("{} bytes left over", bytes.len() - read));
    }
    Ok(value)
}

/// Appends `value` as LEB128.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// How many bytes [`put_varint`] writes for `value`.
pub(crate) fn varint_len(value: u64) -> usize {
    let bits = 64 - value.max(1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_boundaries() {
        for value in [0, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "length of {value}");
            assert_eq!(Reader::new(&out).varint(), Ok(value));
        }
    }

    #[test]
    fn overlong_varint_is_an_error() {
        assert_eq!(Reader::new(&[0xff; 11]).varint(), Err(WireError::BadVarint));
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(Reader::new(&too_big).varint(), Err(WireError::BadVarint));
        assert_eq!(Reader::new(&[0x80]).varint(), Err(WireError::Truncated));
    }

    #[test]
    fn serde_decode_refuses_trailing_bytes() {
        let mut bytes = encode_serde(&7u32).unwrap();
        assert_eq!(decode_serde::<u32>(&bytes), Ok(7));
        bytes.push(0);
        assert!(decode_serde::<u32>(&bytes).is_err());
    }

    #[test]
    fn a_huge_announced_length_is_an_error_not_an_allocation() {
        // A Vec<u64> that claims 2^40 elements in a few bytes.
        let mut bytes = vec![253u8];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode_serde::<Vec<u64>>(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_serde_decode_or_fail(bytes: Vec<u8>) {
            let _ = decode_serde::<(String, Vec<u32>, Option<f32>)>(&bytes);
        }

        #[test]
        fn varint_round_trips(value: u64) {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut reader = Reader::new(&out);
            prop_assert_eq!(reader.varint(), Ok(value));
            prop_assert!(reader.is_empty());
        }

        #[test]
        fn reading_garbage_never_panics(bytes: Vec<u8>) {
            let mut reader = Reader::new(&bytes);
            while reader.varint().is_ok() {}
            let mut reader = Reader::new(&bytes);
            let _ = reader.u64();
            let _ = reader.bytes(bytes.len());
        }
    }
}
