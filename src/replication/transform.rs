//! A compact encoding for [`Transform`]: quantized position, "smallest three" rotation.
//!
//! With the defaults a transform takes 13 bytes (plus 2 for the entity) instead of 40: the
//! position in 2 mm steps as three zigzag varints (3 bytes each within ±2 km), and the rotation
//! as the index of its largest component plus the other three in 9 bits each (the largest is
//! implied by unit length), 30 bits with the scale flag. Scale is only sent when it is not 1.
//! Sent as a difference from a value the receiver has (`delta.rs`), a moving transform takes
//! about 6 bytes.

use bevy::math::{Quat, Vec3};
use bevy::transform::components::Transform;

use super::codec::{
    CodecError, ComponentCodec, DeltaCodec, dequantize, quantize, read_zigzag, write_zigzag,
};

mod delta;

/// The transform codec and its precision. Every peer must use the same settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransformCodec {
    /// Position step in world units. Default 1/512 (about 2 mm for meters).
    pub position_step: f32,
    /// Bits per rotation component, 6 to 15. Default 9: at most about 0.2° of error.
    pub rotation_bits: u8,
    /// Scale step, when the scale is not one. Default 1/1024.
    pub scale_step: f32,
}

impl Default for TransformCodec {
    fn default() -> Self {
        Self {
            position_step: 1.0 / 512.0,
            rotation_bits: 9,
            scale_step: 1.0 / 1024.0,
        }
    }
}

const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// Up to eight bytes read as a little-endian number. A loop rather than a copy into an array
/// read whole: a copy of a length known only at run time is a call, and the wide load after
/// the narrow stores stalls (it was a third of the decode's time).
fn from_le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0, |value, byte| (value << 8) | u64::from(*byte))
}

impl TransformCodec {
    fn bits(&self) -> u32 {
        u32::from(self.rotation_bits.clamp(6, 15))
    }

    /// Bytes the rotation and flags take.
    fn rotation_bytes(&self) -> usize {
        (3 + 3 * self.bits() as usize).div_ceil(8)
    }

    fn pack_rotation(&self, rotation: Quat, has_scale: bool) -> u64 {
        let rotation = if rotation.is_finite() && rotation.length_squared() > 0.0 {
            rotation.normalize()
        } else {
            Quat::IDENTITY
        };
        let components = rotation.to_array();
        let largest = (0..4)
            .max_by(|a, b| components[*a].abs().total_cmp(&components[*b].abs()))
            .unwrap_or(3);
        // q and -q are the same rotation: make the dropped component positive.
        let sign = if components[largest] < 0.0 { -1.0 } else { 1.0 };
        let bits = self.bits();
        let max = ((1u32 << bits) - 1) as f32;
        let mut packed = largest as u64 | (u64::from(has_scale) << 2);
        let mut shift = 3;
        for (index, component) in components.iter().enumerate() {
            if index == largest {
                continue;
            }
            let unit = ((component * sign + SQRT_HALF) / (2.0 * SQRT_HALF)).clamp(0.0, 1.0);
            packed |= ((unit * max).round() as u64) << shift;
            shift += bits;
        }
        packed
    }

    fn unpack_rotation(&self, packed: u64) -> (Quat, bool) {
        let largest = packed & 3;
        let has_scale = packed & 4 != 0;
        let bits = self.bits();
        let max = ((1u32 << bits) - 1) as f32;
        let mask = (1u64 << bits) - 1;
        let [a, b, c]: [f32; 3] = std::array::from_fn(|index| {
            let unit = ((packed >> (3 + bits * index as u32)) & mask) as f32 / max;
            unit * 2.0 * SQRT_HALF - SQRT_HALF
        });
        let dropped = (1.0 - (a * a + b * b + c * c)).max(0.0).sqrt();
        // Built whole, not written one component at a time into an array then read as a
        // quaternion: that wide read after narrow writes stalls (it was half the decode's time).
        let components = match largest {
            0 => [dropped, a, b, c],
            1 => [a, dropped, b, c],
            2 => [a, b, dropped, c],
            _ => [a, b, c, dropped],
        };
        (Quat::from_array(components).normalize(), has_scale)
    }
}

impl ComponentCodec<Transform> for TransformCodec {
    fn encode(&self, value: &Transform, out: &mut Vec<u8>) {
        for axis in value.translation.to_array() {
            write_zigzag(out, quantize(axis, self.position_step));
        }
        let has_scale = value.scale != Vec3::ONE;
        let packed = self.pack_rotation(value.rotation, has_scale);
        out.extend_from_slice(&packed.to_le_bytes()[..self.rotation_bytes()]);
        if has_scale {
            for axis in value.scale.to_array() {
                write_zigzag(out, quantize(axis, self.scale_step));
            }
        }
    }

    fn decode(&self, input: &mut &[u8]) -> Result<Transform, CodecError> {
        let mut translation = [0.0; 3];
        for axis in &mut translation {
            *axis = dequantize(read_zigzag(input)?, self.position_step);
        }
        let len = self.rotation_bytes();
        if input.len() < len {
            return Err(CodecError("transform ends in its rotation".to_owned()));
        }
        let packed = from_le(&input[..len]);
        *input = &input[len..];
        let (rotation, has_scale) = self.unpack_rotation(packed);
        let mut scale = Vec3::ONE;
        if has_scale {
            let mut axes = [0.0; 3];
            for axis in &mut axes {
                *axis = dequantize(read_zigzag(input)?, self.scale_step);
            }
            scale = Vec3::from_array(axes);
        }
        Ok(Transform {
            translation: Vec3::from_array(translation),
            rotation,
            scale,
        })
    }

    fn delta(&self) -> Option<Box<dyn DeltaCodec>> {
        Some(Box::new(*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(codec: &TransformCodec, transform: &Transform) -> (Transform, usize) {
        let mut out = Vec::new();
        codec.encode(transform, &mut out);
        let mut input = out.as_slice();
        let back = codec.decode(&mut input).unwrap();
        assert!(input.is_empty(), "the codec reads exactly what it wrote");
        (back, out.len())
    }

    #[test]
    fn a_moving_entity_takes_13_bytes() {
        let transform =
            Transform::from_xyz(123.4, -56.7, 890.1).with_rotation(Quat::from_rotation_y(1.0));
        let (_, len) = round_trip(&TransformCodec::default(), &transform);
        assert_eq!(len, 13, "three 3-byte varints and 4 bytes of rotation");
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let codec = TransformCodec::default();
        let mut out = Vec::new();
        codec.encode(&Transform::from_scale(Vec3::splat(2.0)), &mut out);
        for cut in 0..out.len() {
            let mut input = &out[..cut];
            assert!(codec.decode(&mut input).is_err(), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn round_trips_within_precision(
            x in -2000.0f32..2000.0, y in -2000.0f32..2000.0, z in -2000.0f32..2000.0,
            ax in -1.0f32..1.0, ay in -1.0f32..1.0, az in -1.0f32..1.0, angle in -6.3f32..6.3,
            scaled: bool,
        ) {
            let axis = Vec3::new(ax, ay, az).try_normalize().unwrap_or(Vec3::Y);
            let mut transform = Transform::from_xyz(x, y, z).with_rotation(Quat::from_axis_angle(axis, angle));
            if scaled {
                transform.scale = Vec3::new(0.5, 2.0, 3.25);
            }
            let codec = TransformCodec::default();
            let (back, _) = round_trip(&codec, &transform);
            prop_assert!((back.translation - transform.translation).abs().max_element() <= codec.position_step);
            prop_assert!(back.rotation.angle_between(transform.rotation) < 0.01, "rotation off by {}", back.rotation.angle_between(transform.rotation));
            prop_assert!((back.scale - transform.scale).abs().max_element() <= codec.scale_step);
        }

        #[test]
        fn any_bytes_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut input = bytes.as_slice();
            if let Ok(transform) = TransformCodec::default().decode(&mut input) {
                prop_assert!(transform.rotation.is_normalized());
            }
        }
    }
}
