//! [`Interpolate`] for the math types and [`Transform`], so that most moving components are a
//! newtype away from being interpolated.

use bevy::math::{Quat, Vec2, Vec3, Vec3A, Vec4};
use bevy::transform::components::Transform;

use super::Interpolate;

impl Interpolate for f32 {
    fn interpolate(&self, other: &Self, t: f32) -> Self {
        self + (other - self) * t
    }

    fn distance(&self, other: &Self) -> f32 {
        (other - self).abs()
    }
}

impl Interpolate for f64 {
    fn interpolate(&self, other: &Self, t: f32) -> Self {
        self + (other - self) * f64::from(t)
    }

    fn distance(&self, other: &Self) -> f32 {
        (other - self).abs() as f32
    }
}

macro_rules! vector {
    ($($vector:ty),*) => {$(
        impl Interpolate for $vector {
            fn interpolate(&self, other: &Self, t: f32) -> Self {
                self.lerp(*other, t)
            }

            fn distance(&self, other: &Self) -> f32 {
                (*self).distance(*other)
            }
        }
    )*};
}

vector!(Vec2, Vec3, Vec3A, Vec4);

/// Along the shorter arc; the distance is the angle between the two, in radians.
impl Interpolate for Quat {
    fn interpolate(&self, other: &Self, t: f32) -> Self {
        self.slerp(*other, t)
    }

    fn distance(&self, other: &Self) -> f32 {
        self.angle_between(*other)
    }
}

/// Translation and scale linearly, rotation along the shorter arc. The distance (for teleport
/// detection) is the translation's: a spin is never a teleport.
impl Interpolate for Transform {
    fn interpolate(&self, other: &Self, t: f32) -> Self {
        Transform {
            translation: self.translation.lerp(other.translation, t),
            rotation: self.rotation.slerp(other.rotation, t),
            scale: self.scale.lerp(other.scale, t),
        }
    }

    fn distance(&self, other: &Self) -> f32 {
        self.translation.distance(other.translation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_lerp_position_and_scale_and_slerp_rotation() {
        let a = Transform::from_xyz(0.0, 0.0, 0.0);
        let b = Transform {
            translation: Vec3::new(2.0, 0.0, 0.0),
            rotation: Quat::from_rotation_z(std::f32::consts::FRAC_PI_2),
            scale: Vec3::splat(3.0),
        };
        let half = a.interpolate(&b, 0.5);
        assert!(half.translation.abs_diff_eq(Vec3::new(1.0, 0.0, 0.0), 1e-6));
        assert!(half.scale.abs_diff_eq(Vec3::splat(2.0), 1e-6));
        assert!(
            half.rotation
                .abs_diff_eq(Quat::from_rotation_z(std::f32::consts::FRAC_PI_4), 1e-6)
        );
        assert_eq!(a.distance(&b), 2.0);
        // Beyond 1 it goes on (extrapolation).
        let further = a.interpolate(&b, 1.5);
        assert!(
            further
                .translation
                .abs_diff_eq(Vec3::new(3.0, 0.0, 0.0), 1e-5)
        );
        assert!(further.rotation.abs_diff_eq(
            Quat::from_rotation_z(3.0 * std::f32::consts::FRAC_PI_4),
            1e-4
        ));
    }

    #[test]
    fn scalars_and_vectors() {
        assert_eq!(1.0f32.interpolate(&3.0, 0.25), 1.5);
        assert_eq!(
            Vec2::ZERO.interpolate(&Vec2::new(4.0, 0.0), 0.5),
            Vec2::X * 2.0
        );
        assert_eq!(
            Interpolate::distance(&Vec2::ZERO, &Vec2::new(3.0, 4.0)),
            5.0
        );
    }
}
