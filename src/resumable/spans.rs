//! How a download's streams share its missing ranges: contiguous spans, one GET each, and a
//! stream that runs out of work takes the back half of the longest span still running.
//!
//! A range is the checkpoint's unit (numbered from 1); a span is a run of consecutive
//! missing ranges fetched with one GET. Splitting the object into about `concurrency` spans
//! keeps the per-request cost out of the throughput, but a fixed split ends at the pace of
//! the slowest stream: one slow connection (common on real stores) or one span that started
//! late leaves the other streams idle. So the [`Board`] lets an idle stream cut a running
//! span short: the running stream stops reading when it reaches the new end, and the idle
//! one fetches the rest with its own GET.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Largest span one GET fetches (at least one range).
pub(super) const MAX_SPAN: u64 = 256 << 20;

/// Groups the missing range numbers into contiguous spans `(first, count)`: runs of
/// consecutive numbers, cut so the work splits into about `concurrency` equal spans (each at
/// most [`MAX_SPAN`] bytes).
pub(super) fn spans(missing: &[u32], concurrency: usize, unit: u64) -> Vec<(u32, u32)> {
    let per_stream = missing.len().div_ceil(concurrency.max(1)).max(1);
    let cap = usize::try_from((MAX_SPAN / unit).max(1)).unwrap_or(usize::MAX);
    let per_span = u32::try_from(per_stream.min(cap)).unwrap_or(u32::MAX);
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &n in missing {
        match out.last_mut() {
            Some((first, count)) if *first + *count == n && *count < per_span => *count += 1,
            _ => out.push((n, 1)),
        }
    }
    out
}

/// Fewest ranges a stream takes from a running span: one. Cutting a running GET short costs
/// what the connection had in flight and a request of its own, but at the end of a download
/// whatever is left to a slow connection is what every stream waits for. With two as the
/// least, a slow stream kept up to three ranges (24 MiB at the default range size) to the
/// end; now it keeps at most one.
const MIN_STEAL: u32 = 1;

/// A span a stream has taken: ranges `first..` up to the lane's current end, which another
/// stream may lower (see [`Board::end`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Claim {
    /// The lane, for [`Board::end`], [`Board::commit`] and [`Board::finish`].
    pub(super) lane: u64,
    /// First range of the span.
    pub(super) first: u32,
}

/// The work of one download, shared by its streams.
#[derive(Debug)]
pub(super) struct Board {
    inner: Mutex<Lanes>,
}

#[derive(Debug)]
struct Lanes {
    /// Spans no stream has taken yet, `(first, end)` with `end` exclusive, in order.
    todo: VecDeque<(u32, u32)>,
    /// Spans being fetched.
    running: Vec<Lane>,
    next_lane: u64,
    /// A stream failed: no new work is handed out (the running spans finish, so what they
    /// fetch is recorded for the next run).
    stopped: bool,
}

#[derive(Debug)]
struct Lane {
    id: u64,
    /// Ranges below this one are written (or being recorded) by the lane's stream.
    next: u32,
    /// Ranges from this one on belong to someone else.
    end: u32,
}

impl Board {
    /// A board of `spans` (`(first, count)`, as [`spans`] makes them).
    pub(super) fn new(spans: Vec<(u32, u32)>) -> Self {
        Self {
            inner: Mutex::new(Lanes {
                todo: spans
                    .into_iter()
                    .filter(|&(_, count)| count > 0)
                    .map(|(first, count)| (first, first.saturating_add(count)))
                    .collect(),
                running: Vec::new(),
                next_lane: 0,
                stopped: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        // The lock is held only for plain arithmetic: a poisoned one holds consistent data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Work for a stream that has none: the next span not taken yet, else the back half of
    /// the running span with the most ranges left, when that half is at least
    /// [`MIN_STEAL`] ranges; `None` when there is nothing worth taking or the board was
    /// stopped.
    pub(super) fn take(&self) -> Option<Claim> {
        let mut lanes = self.lock();
        if lanes.stopped {
            return None;
        }
        let (first, end) = match lanes.todo.pop_front() {
            Some(span) => span,
            None => {
                let victim = lanes
                    .running
                    .iter_mut()
                    .filter(|l| l.end.saturating_sub(l.next) / 2 >= MIN_STEAL)
                    .max_by_key(|l| l.end - l.next)?;
                let cut = victim.end - (victim.end - victim.next) / 2;
                let end = std::mem::replace(&mut victim.end, cut);
                (cut, end)
            }
        };
        let id = lanes.next_lane;
        lanes.next_lane += 1;
        lanes.running.push(Lane {
            id,
            next: first,
            end,
        });
        Some(Claim { lane: id, first })
    }

    /// Where the lane ends now (exclusive range number); its stream fetches no further.
    pub(super) fn end(&self, lane: u64) -> u32 {
        self.lock()
            .running
            .iter()
            .find(|l| l.id == lane)
            .map_or(0, |l| l.end)
    }

    /// The lane's stream has written every range below `upto`: returns how far it may record
    /// them (`upto`, or the lane's end if another stream took the ranges from there), and no
    /// other stream takes them from now on.
    pub(super) fn commit(&self, lane: u64, upto: u32) -> u32 {
        let mut lanes = self.lock();
        let Some(l) = lanes.running.iter_mut().find(|l| l.id == lane) else {
            return 0;
        };
        let upto = upto.min(l.end);
        l.next = l.next.max(upto);
        upto
    }

    /// The lane's stream is done with it (finished or failed).
    pub(super) fn finish(&self, lane: u64) {
        self.lock().running.retain(|l| l.id != lane);
    }

    /// Hands out no more work (a stream failed).
    pub(super) fn stop(&self) {
        self.lock().stopped = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_split_the_work_evenly_and_keep_runs_contiguous() {
        const MIB: u64 = 1 << 20;
        // 128 ranges of 8 MiB, 4 streams: 4 spans of 32 ranges (256 MiB each).
        let all: Vec<u32> = (1..=128).collect();
        assert_eq!(
            spans(&all, 4, 8 * MIB),
            vec![(1, 32), (33, 32), (65, 32), (97, 32)]
        );
        // No span over MAX_SPAN: 1 stream, 1 GiB of 8 MiB ranges -> 256 MiB spans.
        assert_eq!(spans(&all, 1, 8 * MIB).len(), 4);
        // Holes (ranges done by an earlier run) split spans; no span covers a done range.
        let missing = [1, 2, 3, 7, 8, 20];
        let s = spans(&missing, 2, 8 * MIB);
        assert_eq!(s, vec![(1, 3), (7, 2), (20, 1)]);
        // More streams than ranges: one range each.
        assert_eq!(spans(&[5, 6], 8, 8 * MIB), vec![(5, 1), (6, 1)]);
        assert!(spans(&[], 4, 8 * MIB).is_empty());
    }

    #[test]
    fn spans_are_handed_out_in_order_then_split() {
        let board = Board::new(vec![(1, 8), (9, 8)]);
        let a = board.take().unwrap();
        let b = board.take().unwrap();
        assert_eq!((a.first, board.end(a.lane)), (1, 9));
        assert_eq!((b.first, board.end(b.lane)), (9, 17));
        // b finishes; a has written 1..3: the idle stream takes the back half of 3..9.
        assert_eq!(board.commit(b.lane, 17), 17);
        board.finish(b.lane);
        assert_eq!(board.commit(a.lane, 3), 3);
        let c = board.take().unwrap();
        assert_eq!((c.first, board.end(c.lane)), (6, 9));
        assert_eq!(board.end(a.lane), 6);
        // a may record only up to its new end, however far its response went.
        assert_eq!(board.commit(a.lane, 8), 6);
        board.finish(a.lane);
        // c has three ranges left (6, 7, 8): an idle stream takes the last one, the next
        // idle stream the one before; a range is never split, so then nothing is left to take.
        let d = board.take().unwrap();
        assert_eq!((d.first, board.end(d.lane)), (8, 9));
        assert_eq!(board.end(c.lane), 8);
        let e = board.take().unwrap();
        assert_eq!((e.first, board.end(e.lane)), (7, 8));
        assert_eq!(board.end(c.lane), 7);
        assert!(board.take().is_none());
        // Idle streams split a long span again and again, down to single ranges.
        let board = Board::new(vec![(1, 16)]);
        let mut claims = Vec::new();
        while let Some(c) = board.take() {
            claims.push(c);
        }
        let mut pieces: Vec<_> = claims
            .iter()
            .map(|c| (c.first, board.end(c.lane)))
            .collect();
        pieces.sort_unstable();
        let expected: Vec<_> = (1..=16).map(|i| (i, i + 1)).collect();
        assert_eq!(pieces, expected);
    }

    #[test]
    fn every_range_is_recorded_by_exactly_one_stream() {
        // Streams that commit one range at a time, in any interleaving with takes: the
        // recorded ranges are exactly 1..=n, each once.
        for seed in 0..200u64 {
            let n = 37;
            let board = Board::new(spans(&(1..=n).collect::<Vec<_>>(), 3, 1));
            let mut active: Vec<(Claim, u32)> = Vec::new();
            let mut recorded = Vec::new();
            let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let mut roll = |m: usize| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (rng >> 33) as usize % m
            };
            while let Some(claim) = board.take() {
                active.push((claim, claim.first));
            }
            while !active.is_empty() {
                let i = roll(active.len());
                let (claim, next) = active[i];
                if next >= board.end(claim.lane) {
                    board.finish(claim.lane);
                    active.swap_remove(i);
                    if roll(2) == 0
                        && let Some(c) = board.take()
                    {
                        active.push((c, c.first));
                    }
                    continue;
                }
                let upto = board.commit(claim.lane, next + 1);
                recorded.extend(next..upto);
                active[i].1 = upto.max(next);
                if roll(3) == 0
                    && let Some(c) = board.take()
                {
                    active.push((c, c.first));
                }
            }
            recorded.sort_unstable();
            assert_eq!(recorded, (1..=n).collect::<Vec<_>>(), "seed {seed}");
        }
    }

    #[test]
    fn a_stopped_board_hands_out_nothing() {
        let board = Board::new(vec![(1, 4), (5, 4)]);
        let a = board.take().unwrap();
        board.stop();
        assert!(board.take().is_none());
        assert_eq!(board.end(a.lane), 5);
    }
}
