//! A transform as the difference from an earlier one, on the quantized form: the position axes
//! that moved, as zigzag varints of the steps they moved, and the rotation's three stored
//! components as small signed steps (5 bits each, in 2 bytes, when all turned by at most 15
//! steps; 8 bits each when by at most 127), or whole when its largest component changed. A
//! change of scale sends the transform whole.
//!
//! ```text
//! delta := flags:u8 (x y z):zigzag* rotation?
//! flags := bit 0..2 the axis moved · bit 3 the rotation turned · bit 4 its steps take 8 bits
//!          · bit 5 it goes whole (its stored bytes)
//! ```

use super::{CodecError, DeltaCodec, TransformCodec, from_le, read_zigzag, write_zigzag};

const ROTATION_TURNED: u8 = 1 << 3;
const ROTATION_WIDE: u8 = 1 << 4;
const ROTATION_WHOLE: u8 = 1 << 5;
const KNOWN_FLAGS: u8 = 0b0011_1111;

/// A transform's full encoding, read back into its integers.
struct Quantized<'a> {
    axes: [i64; 3],
    /// The rotation's stored bits: largest component's index, scale flag, three components.
    rotation: u64,
    /// The scale part, as it was encoded.
    scale: &'a [u8],
}

impl TransformCodec {
    /// Reads a full encoding; it must hold one transform and nothing else.
    fn quantized<'a>(&self, encoding: &'a [u8]) -> Result<Quantized<'a>, CodecError> {
        let mut input = encoding;
        let mut axes = [0; 3];
        for axis in &mut axes {
            *axis = read_zigzag(&mut input)?;
        }
        let len = self.rotation_bytes();
        if input.len() < len {
            return Err(CodecError("a baseline ends in its rotation".to_owned()));
        }
        Ok(Quantized {
            axes,
            rotation: from_le(&input[..len]),
            scale: &input[len..],
        })
    }

    /// The rotation's three stored components.
    fn components(&self, rotation: u64) -> [i64; 3] {
        let bits = self.bits();
        let mask = (1u64 << bits) - 1;
        std::array::from_fn(|index| ((rotation >> (3 + bits * index as u32)) & mask) as i64)
    }

    /// Writes a full encoding from its integers.
    fn write_quantized(&self, value: &Quantized<'_>, out: &mut Vec<u8>) {
        for axis in value.axes {
            write_zigzag(out, axis);
        }
        out.extend_from_slice(&value.rotation.to_le_bytes()[..self.rotation_bytes()]);
        out.extend_from_slice(value.scale);
    }
}

impl DeltaCodec for TransformCodec {
    fn encode_delta(&self, baseline: &[u8], current: &[u8], out: &mut Vec<u8>) -> bool {
        let (Ok(base), Ok(now)) = (self.quantized(baseline), self.quantized(current)) else {
            return false;
        };
        if base.scale != now.scale {
            return false;
        }
        let start = out.len();
        out.push(0);
        let mut flags = 0u8;
        for (axis, (from, to)) in base.axes.iter().zip(now.axes).enumerate() {
            if *from != to {
                flags |= 1 << axis;
                write_zigzag(out, to.wrapping_sub(*from));
            }
        }
        if base.rotation != now.rotation {
            flags |= ROTATION_TURNED;
            // The index of the largest component and the scale flag: the low three bits.
            let steps: Option<[i64; 3]> = (base.rotation & 7 == now.rotation & 7).then(|| {
                let (from, to) = (
                    self.components(base.rotation),
                    self.components(now.rotation),
                );
                std::array::from_fn(|index| to[index] - from[index])
            });
            match steps {
                Some(steps) if steps.iter().all(|step| (-16..=15).contains(step)) => {
                    let packed = steps
                        .iter()
                        .enumerate()
                        .fold(0u16, |packed, (index, step)| {
                            packed | ((*step as u16 & 0x1f) << (5 * index))
                        });
                    out.extend_from_slice(&packed.to_le_bytes());
                }
                Some(steps) if steps.iter().all(|step| (-128..=127).contains(step)) => {
                    flags |= ROTATION_WIDE;
                    out.extend(steps.iter().map(|step| *step as i8 as u8));
                }
                _ => {
                    flags |= ROTATION_WHOLE;
                    out.extend_from_slice(&now.rotation.to_le_bytes()[..self.rotation_bytes()]);
                }
            }
        }
        out[start] = flags;
        if out.len() - start >= current.len() {
            out.truncate(start);
            return false;
        }
        true
    }

    fn decode_delta(
        &self,
        baseline: &[u8],
        input: &mut &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let mut value = self.quantized(baseline)?;
        let flags = read_flags(input)?;
        for (axis, steps) in value.axes.iter_mut().enumerate() {
            if flags & (1 << axis) != 0 {
                *steps = steps
                    .checked_add(read_zigzag(input)?)
                    .ok_or_else(|| CodecError("a position moves out of range".to_owned()))?;
            }
        }
        if flags & ROTATION_TURNED != 0 {
            value.rotation = self.turned(value.rotation, flags, input)?;
        }
        self.write_quantized(&value, out);
        Ok(())
    }

    fn skip_delta(&self, input: &mut &[u8]) -> Result<(), CodecError> {
        let flags = read_flags(input)?;
        for axis in 0..3 {
            if flags & (1 << axis) != 0 {
                read_zigzag(input)?;
            }
        }
        if flags & ROTATION_TURNED != 0 {
            take(input, self.rotation_len(flags))?;
        }
        Ok(())
    }
}

impl TransformCodec {
    /// Bytes the rotation's difference takes.
    fn rotation_len(&self, flags: u8) -> usize {
        if flags & ROTATION_WHOLE != 0 {
            self.rotation_bytes()
        } else if flags & ROTATION_WIDE != 0 {
            3
        } else {
            2
        }
    }

    /// The rotation `rotation` turned by the difference at the front of `input`.
    fn turned(&self, rotation: u64, flags: u8, input: &mut &[u8]) -> Result<u64, CodecError> {
        let bytes = take(input, self.rotation_len(flags))?;
        if flags & ROTATION_WHOLE != 0 {
            let whole = from_le(bytes);
            if whole & 4 != rotation & 4 {
                return Err(CodecError("a rotation changes the scale flag".to_owned()));
            }
            return Ok(whole);
        }
        let steps: [i64; 3] = if flags & ROTATION_WIDE != 0 {
            std::array::from_fn(|index| i64::from(bytes[index] as i8))
        } else {
            let packed = u16::from_le_bytes([bytes[0], bytes[1]]);
            // Each 5 bits are a signed step: shift them to the top and back to extend the sign.
            std::array::from_fn(|index| {
                let step = ((packed >> (5 * index)) & 0x1f) as u8;
                i64::from((step << 3) as i8 >> 3)
            })
        };
        let bits = self.bits();
        let mask = (1i64 << bits) - 1;
        let mut turned = rotation & 7;
        for (index, (component, step)) in self.components(rotation).iter().zip(steps).enumerate() {
            let component = component + step;
            if !(0..=mask).contains(&component) {
                return Err(CodecError("a rotation turns out of range".to_owned()));
            }
            turned |= (component as u64) << (3 + bits * index as u32);
        }
        Ok(turned)
    }
}

fn read_flags(input: &mut &[u8]) -> Result<u8, CodecError> {
    let flags = take(input, 1)?[0];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(CodecError(format!(
            "unknown transform difference flags {flags:#x}"
        )));
    }
    Ok(flags)
}

fn take<'a>(input: &mut &'a [u8], len: usize) -> Result<&'a [u8], CodecError> {
    if input.len() < len {
        return Err(CodecError("a transform difference ends early".to_owned()));
    }
    let (head, rest) = input.split_at(len);
    *input = rest;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use bevy::math::{Quat, Vec3};
    use bevy::transform::components::Transform;
    use proptest::prelude::*;

    use super::*;
    use crate::replication::codec::ComponentCodec;

    fn encoded(codec: &TransformCodec, transform: &Transform) -> Vec<u8> {
        let mut out = Vec::new();
        codec.encode(transform, &mut out);
        out
    }

    /// The difference's length, after checking it rebuilds `current` exactly.
    fn round_trip(codec: &TransformCodec, baseline: &Transform, current: &Transform) -> usize {
        let (baseline, current) = (encoded(codec, baseline), encoded(codec, current));
        let mut delta = Vec::new();
        if !codec.encode_delta(&baseline, &current, &mut delta) {
            return current.len();
        }
        let mut input = delta.as_slice();
        let mut rebuilt = Vec::new();
        codec
            .decode_delta(&baseline, &mut input, &mut rebuilt)
            .unwrap();
        assert!(input.is_empty(), "the difference is read whole");
        assert_eq!(rebuilt, current, "the rebuilt encoding is the current one");
        let mut skipped = delta.as_slice();
        codec.skip_delta(&mut skipped).unwrap();
        assert!(skipped.is_empty(), "skipping reads the same bytes");
        delta.len()
    }

    #[test]
    fn a_frame_of_movement_takes_about_six_bytes() {
        let codec = TransformCodec::default();
        let from = Transform::from_xyz(10.0, 2.0, -3.0).with_rotation(Quat::from_rotation_y(1.0));
        let to = Transform::from_xyz(10.4, 2.1, -3.0).with_rotation(Quat::from_rotation_y(1.016));
        assert!(
            round_trip(&codec, &from, &to) <= 6,
            "flags, two axes, 2 bytes of rotation"
        );
        assert_eq!(
            round_trip(&codec, &from, &from),
            1,
            "unchanged: the flags alone"
        );
    }

    proptest! {
        #[test]
        fn differences_rebuild_the_encoding(
            x in -2000.0f32..2000.0, y in -2000.0f32..2000.0, z in -2000.0f32..2000.0,
            dx in -5.0f32..5.0, dy in -0.1f32..0.1, angle in -6.3f32..6.3, turn in -0.5f32..0.5,
            scaled: bool, rescaled: bool,
        ) {
            let codec = TransformCodec::default();
            let mut from = Transform::from_xyz(x, y, z).with_rotation(Quat::from_rotation_y(angle));
            if scaled {
                from.scale = Vec3::splat(2.0);
            }
            let mut to = Transform::from_xyz(x + dx, y + dy, z)
                .with_rotation(Quat::from_rotation_x(turn) * from.rotation);
            to.scale = if rescaled { Vec3::splat(3.0) } else { from.scale };
            round_trip(&codec, &from, &to);
        }

        #[test]
        fn garbage_never_panics(
            baseline in proptest::collection::vec(any::<u8>(), 0..24),
            bytes in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            let codec = TransformCodec::default();
            let mut out = Vec::new();
            let _ = codec.decode_delta(&baseline, &mut bytes.as_slice(), &mut out);
            let _ = codec.skip_delta(&mut bytes.as_slice());
            prop_assert!(out.len() <= baseline.len() + 30);
        }
    }
}
