//! Entities owned here bucketed by grid cell, so that what a viewpoint sees is found by looking
//! at the cells around it, not at every entity.

use bevy::platform::collections::HashMap;
use bevy::prelude::*;

/// Where an entity is in the index.
#[derive(Debug, Clone, Copy)]
struct Placed {
    cell: IVec3,
    position: Vec3,
}

/// Positions of entities, by cell.
#[derive(Debug)]
pub(super) struct SpatialIndex {
    cell_size: f32,
    cells: HashMap<IVec3, Vec<Entity>>,
    placed: HashMap<Entity, Placed>,
}

impl SpatialIndex {
    /// An empty index of cells of `cell_size` (a size that is not a positive finite number
    /// falls back to 1).
    pub(super) fn new(cell_size: f32) -> Self {
        Self {
            cell_size: if cell_size.is_finite() && cell_size > 0.0 {
                cell_size
            } else {
                1.0
            },
            cells: HashMap::default(),
            placed: HashMap::default(),
        }
    }

    pub(super) fn cell_size(&self) -> f32 {
        self.cell_size
    }

    fn cell_of(&self, position: Vec3) -> IVec3 {
        // Saturating casts: a position out of range (or NaN) lands in an edge cell, no panic.
        (position / self.cell_size).floor().as_ivec3()
    }

    /// Puts `entity` at `position`, moving it if it was elsewhere.
    pub(super) fn place(&mut self, entity: Entity, position: Vec3) {
        let cell = self.cell_of(position);
        let previous = self.placed.insert(entity, Placed { cell, position });
        match previous {
            Some(previous) if previous.cell == cell => {}
            Some(previous) => {
                self.take_from(previous.cell, entity);
                self.cells.entry(cell).or_default().push(entity);
            }
            None => self.cells.entry(cell).or_default().push(entity),
        }
    }

    /// Takes `entity` out of the index.
    pub(super) fn remove(&mut self, entity: Entity) {
        if let Some(previous) = self.placed.remove(&entity) {
            self.take_from(previous.cell, entity);
        }
    }

    fn take_from(&mut self, cell: IVec3, entity: Entity) {
        if let Some(bucket) = self.cells.get_mut(&cell) {
            if let Some(index) = bucket.iter().position(|e| *e == entity) {
                bucket.swap_remove(index);
            }
            if bucket.is_empty() {
                self.cells.remove(&cell);
            }
        }
    }

    /// Whether `entity` is in the index.
    pub(super) fn contains(&self, entity: Entity) -> bool {
        self.placed.contains_key(&entity)
    }

    /// Calls `found` with each entity within `reach` of `center`, and its distance. Looks at
    /// the cells that the sphere touches, or at every occupied cell when there are fewer.
    pub(super) fn near(&self, center: Vec3, reach: f32, mut found: impl FnMut(Entity, f32)) {
        // A NaN reach compares false both ways: it reaches nothing.
        if reach.is_nan() || reach < 0.0 || !center.is_finite() {
            return;
        }
        let low = self.cell_of(center - Vec3::splat(reach));
        let high = self.cell_of(center + Vec3::splat(reach));
        let span = |axis: usize| (i64::from(high[axis]) - i64::from(low[axis]) + 1) as f64;
        let cells_in_reach = span(0) * span(1) * span(2);
        let mut visit = |bucket: &Vec<Entity>| {
            for entity in bucket {
                if let Some(placed) = self.placed.get(entity) {
                    let distance = placed.position.distance(center);
                    if distance <= reach {
                        found(*entity, distance);
                    }
                }
            }
        };
        if cells_in_reach > self.cells.len() as f64 {
            for (cell, bucket) in &self.cells {
                if cell.cmpge(low).all() && cell.cmple(high).all() {
                    visit(bucket);
                }
            }
            return;
        }
        for x in low.x..=high.x {
            for y in low.y..=high.y {
                for z in low.z..=high.z {
                    if let Some(bucket) = self.cells.get(&IVec3::new(x, y, z)) {
                        visit(bucket);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(index: u32) -> Entity {
        Entity::from_raw_u32(index).unwrap()
    }

    fn near(index: &SpatialIndex, center: Vec3, reach: f32) -> Vec<Entity> {
        let mut found = Vec::new();
        index.near(center, reach, |entity, _| found.push(entity));
        found.sort_by_key(|entity| entity.index());
        found
    }

    #[test]
    fn finds_what_is_within_reach_across_cells_and_follows_moves() {
        let mut index = SpatialIndex::new(10.0);
        index.place(entity(1), Vec3::new(1.0, 0.0, 0.0));
        index.place(entity(2), Vec3::new(-9.0, 0.0, 0.0));
        index.place(entity(3), Vec3::new(25.0, 0.0, 0.0));
        index.place(entity(4), Vec3::new(0.0, 0.0, 50.0));
        assert_eq!(
            near(&index, Vec3::ZERO, 12.0),
            vec![entity(1), entity(2)],
            "the entities within 12 of the origin, in the cells on both sides"
        );
        index.place(entity(3), Vec3::new(5.0, 5.0, 0.0));
        index.remove(entity(1));
        assert_eq!(near(&index, Vec3::ZERO, 12.0), vec![entity(2), entity(3)]);
        assert!(!index.contains(entity(1)));
        assert_eq!(
            near(&index, Vec3::new(0.0, 0.0, 45.0), 1e9),
            vec![entity(2), entity(3), entity(4)],
            "a reach over more cells than are occupied looks at the occupied ones"
        );
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let mut index = SpatialIndex::new(f32::NAN);
        assert_eq!(index.cell_size(), 1.0);
        index.place(entity(1), Vec3::splat(f32::INFINITY));
        index.place(entity(2), Vec3::splat(f32::NAN));
        index.place(entity(3), Vec3::splat(-1e30));
        let _ = near(&index, Vec3::ZERO, f32::INFINITY);
        let _ = near(&index, Vec3::splat(f32::NAN), 1.0);
        assert!(near(&index, Vec3::ZERO, -1.0).is_empty());
    }
}
