//! How component values become bytes: the trait, the serde default, and helpers for compact
//! hand-written encodings (varints, zigzag, quantization).
//!
//! A codec reads exactly what it wrote: mutation messages carry no per-value length, which is
//! what keeps a moving entity within 15 bytes with [`TransformCodec`](super::TransformCodec).

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire::{decode_serde_prefix, encode_serde_into};

mod delta;

pub(crate) use self::delta::{BASELINES_KEPT, MAX_BASELINE_LEN};
pub use self::delta::{ByteDelta, DeltaCodec};

/// Why a value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

impl CodecError {
    fn truncated() -> Self {
        CodecError("input ends in the middle of a value".to_owned())
    }
}

/// Encodes and decodes values of `C`.
pub trait ComponentCodec<C>: Send + Sync + 'static {
    /// Appends `value` to `out`.
    fn encode(&self, value: &C, out: &mut Vec<u8>);
    /// Reads one value from the front of `input`, advancing it past what was read. Input is
    /// untrusted: return an error rather than panic, and allocate only what the input holds.
    fn decode(&self, input: &mut &[u8]) -> Result<C, CodecError>;

    /// How values are sent as differences from one the receiver has, if they can be: the codec's
    /// own [`DeltaCodec`], which a registration picks up (`None` by default; set one for any
    /// codec with [`replicate_delta`](super::ReplicationAppExt::replicate_delta)).
    fn delta(&self) -> Option<Box<dyn DeltaCodec>> {
        None
    }
}

/// A pair of functions as a codec: what [`replicate_with`](super::ReplicationAppExt::replicate_with)
/// takes.
impl<C, E, D> ComponentCodec<C> for (E, D)
where
    C: 'static,
    E: Fn(&C, &mut Vec<u8>) + Send + Sync + 'static,
    D: Fn(&mut &[u8]) -> Result<C, CodecError> + Send + Sync + 'static,
{
    fn encode(&self, value: &C, out: &mut Vec<u8>) {
        (self.0)(value, out)
    }

    fn decode(&self, input: &mut &[u8]) -> Result<C, CodecError> {
        (self.1)(input)
    }
}

/// The default codec: bincode 2 (standard configuration). A decode may claim at most 16 MiB
/// for the values it builds, whatever lengths the input announces.
#[derive(Debug, Clone, Copy, Default)]
pub struct SerdeCodec;

impl<C: Serialize + DeserializeOwned + 'static> ComponentCodec<C> for SerdeCodec {
    fn encode(&self, value: &C, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail; a type whose Serialize impl fails is a bug in it.
        if let Err(error) = encode_serde_into(value, out) {
            tracing::error!("cannot encode {}: {error}", std::any::type_name::<C>());
        }
    }

    fn decode(&self, input: &mut &[u8]) -> Result<C, CodecError> {
        let (value, read) = decode_serde_prefix(input).map_err(CodecError)?;
        *input = &input[read..];
        Ok(value)
    }
}

/// Appends `value` as LEB128 (1 byte below 128, 2 below 16 384, …).
pub fn write_varint(out: &mut Vec<u8>, value: u64) {
    crate::wire::put_varint(out, value);
}

/// Reads a LEB128 value.
#[inline]
pub fn read_varint(input: &mut &[u8]) -> Result<u64, CodecError> {
    let (value, len) = crate::wire::parse_varint(input).map_err(|e| CodecError(e.to_string()))?;
    *input = &input[len..];
    Ok(value)
}

/// Appends a signed value as a zigzag varint: small magnitudes of either sign take few bytes.
pub fn write_zigzag(out: &mut Vec<u8>, value: i64) {
    write_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// Reads a zigzag varint.
#[inline]
pub fn read_zigzag(input: &mut &[u8]) -> Result<i64, CodecError> {
    let raw = read_varint(input)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

/// Reads `N` bytes.
pub fn read_bytes<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], CodecError> {
    let (head, rest) = input
        .split_first_chunk::<N>()
        .ok_or_else(CodecError::truncated)?;
    *input = rest;
    Ok(*head)
}

/// `value` in steps of `step`, as an integer; non-finite values become 0 and huge ones saturate.
pub fn quantize(value: f32, step: f32) -> i64 {
    let steps = f64::from(value) / f64::from(step);
    if steps.is_finite() {
        steps
            .round()
            .clamp(-(1i64 << 52) as f64, (1i64 << 52) as f64) as i64
    } else {
        0
    }
}

/// The inverse of [`quantize`].
pub fn dequantize(steps: i64, step: f32) -> f32 {
    (steps as f64 * f64::from(step)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn zigzag_round_trips(value: i64) {
            let mut out = Vec::new();
            write_zigzag(&mut out, value);
            let mut input = out.as_slice();
            prop_assert_eq!(read_zigzag(&mut input), Ok(value));
            prop_assert!(input.is_empty());
        }

        #[test]
        fn quantization_stays_within_half_a_step(value in -1.0e6f32..1.0e6, step in 0.0001f32..1.0) {
            let back = dequantize(quantize(value, step), step);
            prop_assert!((back - value).abs() <= step * 0.5 + value.abs() * 1e-6);
        }
    }

    #[test]
    fn small_signed_values_are_small() {
        let mut out = Vec::new();
        write_zigzag(&mut out, -64);
        write_zigzag(&mut out, 63);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn serde_codec_consumes_exactly_its_value() {
        let mut out = Vec::new();
        SerdeCodec.encode(&(1u32, "two".to_owned()), &mut out);
        out.push(0xaa);
        let mut input = out.as_slice();
        let value: (u32, String) = SerdeCodec.decode(&mut input).unwrap();
        assert_eq!(value, (1, "two".to_owned()));
        assert_eq!(input, &[0xaa]);
    }
}
