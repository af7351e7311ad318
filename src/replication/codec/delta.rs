//! Values sent as differences from a value the receiver already has.
//!
//! An owner remembers, per peer and per value, the newest value that peer acknowledged (its
//! *baseline*), and sends what changed since then; a receiver keeps the last few values it got of
//! each, so whichever baseline the owner picked is still there. Both sides work on the codec's
//! full encodings, so the value a receiver rebuilds is the owner's bit for bit, and a codec that
//! quantizes never drifts.

use super::{CodecError, read_varint, write_varint};

/// How many values a receiver keeps of each entity's component as possible baselines: an owner
/// only uses a baseline that fewer than this many newer sends followed, so at 60 ticks per second
/// a value that changes every tick is sent as a difference while acknowledgements take less than
/// about 250 ms (a round trip plus the receiver's frame), and whole beyond. It costs a receiver
/// about 400 bytes per moving transform it holds.
pub(crate) const BASELINES_KEPT: usize = 16;

/// Values whose full encoding is longer than this are always sent whole: receivers keep every
/// baseline they may be asked for (16 of each), and this bounds what that costs them: at most
/// 1 KiB per entity's component, whatever an owner sends.
pub(crate) const MAX_BASELINE_LEN: usize = 64;

/// Writes a component's value as the difference from an earlier value of it (the baseline), and
/// rebuilds the value from the baseline and that difference. Both values are given in the full
/// encoding of the component's [`ComponentCodec`](super::ComponentCodec), and the rebuilt value
/// must be that encoding exactly, byte for byte: it becomes a baseline in turn.
///
/// Register one with [`ReplicationAppExt::replicate_delta`](crate::replication::ReplicationAppExt::replicate_delta);
/// [`TransformCodec`](crate::replication::TransformCodec) brings its own. [`ByteDelta`] suits
/// any codec whose encoding keeps the same length as values change.
pub trait DeltaCodec: Send + Sync + 'static {
    /// Appends to `out` what turns `baseline` into `current`, or returns false, having written
    /// nothing, when the difference would not be smaller than `current` (the value then goes
    /// whole).
    fn encode_delta(&self, baseline: &[u8], current: &[u8], out: &mut Vec<u8>) -> bool;

    /// Appends to `out` the value that `baseline` and the difference at the front of `input` make,
    /// advancing `input` past the difference. Input is untrusted: return an error rather than
    /// panic, and write only what the input accounts for.
    fn decode_delta(
        &self,
        baseline: &[u8],
        input: &mut &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError>;

    /// Advances `input` past one difference without its baseline: a receiver that no longer has
    /// the baseline skips the value and asks for it whole.
    fn skip_delta(&self, input: &mut &[u8]) -> Result<(), CodecError>;
}

/// A difference of equal-length encodings as the bytes that changed: runs of
/// `(unchanged, changed)` lengths, each followed by the changed bytes. A struct of fixed-size
/// fields through [`SerdeCodec`](super::SerdeCodec) where one field changes at a time costs a few
/// bytes instead of all of them. Encodings whose length changed, and encodings longer than
/// 64 bytes (what receivers keep of each value is bounded), go whole.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteDelta;

impl DeltaCodec for ByteDelta {
    fn encode_delta(&self, baseline: &[u8], current: &[u8], out: &mut Vec<u8>) -> bool {
        if baseline.len() != current.len() {
            return false;
        }
        let start = out.len();
        let runs = changed_runs(baseline, current);
        write_varint(out, runs.len() as u64);
        let mut at = 0;
        for run in &runs {
            write_varint(out, (run.start - at) as u64);
            write_varint(out, run.len() as u64);
            out.extend_from_slice(&current[run.clone()]);
            at = run.end;
        }
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
        let start = out.len();
        out.extend_from_slice(baseline);
        let value = &mut out[start..];
        let mut at = 0usize;
        for_each_run(input, |skip, changed| {
            at = at
                .checked_add(skip)
                .filter(|at| {
                    at.checked_add(changed.len())
                        .is_some_and(|end| end <= value.len())
                })
                .ok_or_else(|| CodecError("a difference runs past its baseline".to_owned()))?;
            value[at..at + changed.len()].copy_from_slice(changed);
            at += changed.len();
            Ok(())
        })
        .inspect_err(|_| out.truncate(start))
    }

    fn skip_delta(&self, input: &mut &[u8]) -> Result<(), CodecError> {
        for_each_run(input, |_, _| Ok(()))
    }
}

/// The ranges where `current` differs from `baseline` (same length), merging changes separated by
/// fewer than two unchanged bytes (a run header costs two).
fn changed_runs(baseline: &[u8], current: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (index, (a, b)) in baseline.iter().zip(current).enumerate() {
        if a == b {
            continue;
        }
        match runs.last_mut() {
            Some(run) if index - run.end < 2 => run.end = index + 1,
            _ => runs.push(index..index + 1),
        }
    }
    runs
}

/// Reads a [`ByteDelta`] difference, handing each run to `apply`.
fn for_each_run(
    input: &mut &[u8],
    mut apply: impl FnMut(usize, &[u8]) -> Result<(), CodecError>,
) -> Result<(), CodecError> {
    let runs = read_varint(input)?;
    for _ in 0..runs {
        let skip = read_varint(input)?;
        let len = read_varint(input)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= input.len())
            .ok_or_else(|| CodecError("a difference ends in its bytes".to_owned()))?;
        let skip = usize::try_from(skip)
            .map_err(|_| CodecError("a difference skips too far".to_owned()))?;
        let (changed, rest) = input.split_at(len);
        *input = rest;
        apply(skip, changed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(baseline: &[u8], current: &[u8]) -> Option<usize> {
        let mut delta = Vec::new();
        if !ByteDelta.encode_delta(baseline, current, &mut delta) {
            assert!(delta.is_empty(), "a refused difference writes nothing");
            return None;
        }
        let mut input = delta.as_slice();
        let mut rebuilt = vec![0xee];
        ByteDelta
            .decode_delta(baseline, &mut input, &mut rebuilt)
            .unwrap();
        assert!(input.is_empty(), "the difference is read whole");
        assert_eq!(
            &rebuilt[1..],
            current,
            "the rebuilt value is the current one"
        );
        let mut skipped = delta.as_slice();
        ByteDelta.skip_delta(&mut skipped).unwrap();
        assert!(skipped.is_empty(), "skipping reads the same bytes");
        Some(delta.len())
    }

    #[test]
    fn one_changed_field_costs_a_few_bytes() {
        let baseline = [7u8; 40];
        let mut current = baseline;
        current[20] = 8;
        current[21] = 9;
        assert_eq!(round_trip(&baseline, &current), Some(5));
        assert_eq!(
            round_trip(&baseline, &baseline),
            Some(1),
            "no change: one byte"
        );
    }

    #[test]
    fn a_run_past_the_baseline_is_an_error_not_a_panic() {
        // One run that skips u64::MAX bytes, then changes one.
        let mut hostile = vec![1];
        hostile.extend_from_slice(&[0xff; 9]);
        hostile.extend_from_slice(&[0x01, 0x01, 0xaa]);
        let mut out = Vec::new();
        assert!(
            ByteDelta
                .decode_delta(&[0; 8], &mut hostile.as_slice(), &mut out)
                .is_err()
        );
        assert!(out.is_empty(), "nothing is kept of a refused difference");
    }

    #[test]
    fn other_lengths_and_big_changes_go_whole() {
        assert_eq!(round_trip(&[1, 2, 3], &[1, 2]), None);
        assert_eq!(round_trip(&[1, 2, 3], &[4, 5, 6]), None);
    }

    proptest! {
        #[test]
        fn differences_rebuild_the_value(
            baseline in proptest::collection::vec(any::<u8>(), 0..64),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        ) {
            let mut current = baseline.clone();
            for (at, value) in flips {
                if !current.is_empty() {
                    let len = current.len();
                    current[at % len] = value;
                }
            }
            round_trip(&baseline, &current);
        }

        #[test]
        fn garbage_fails_or_stays_within_the_baseline(
            baseline in proptest::collection::vec(any::<u8>(), 0..32),
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut out = Vec::new();
            let mut input = bytes.as_slice();
            match ByteDelta.decode_delta(&baseline, &mut input, &mut out) {
                Ok(()) => prop_assert_eq!(out.len(), baseline.len()),
                Err(_) => prop_assert!(out.is_empty()),
            }
            let _ = ByteDelta.skip_delta(&mut bytes.as_slice());
        }
    }
}
