//! Aligned checkpoint barriers at a task with several inputs (Flink's aligned checkpoints):
//! once a sender's barrier for checkpoint `n` has arrived, its later messages are held back
//! until every other live sender's barrier for `n` has arrived too; then the task snapshots,
//! forwards the barrier, and processes what was held back, in arrival order. A sender that
//! has ended needs no barrier. This module owns that bookkeeping only; the task owns what
//! "snapshot" and "process" mean.

use std::collections::VecDeque;

use millrace_types::{CheckpointId, StreamMessage};

/// What the task does with a message it received.
#[derive(Debug)]
pub(crate) enum Aligned {
    /// Process this message now.
    Process(usize, StreamMessage),
    /// Every live sender has delivered the barrier of this checkpoint: snapshot and forward.
    Snapshot(CheckpointId),
    /// Held back (its sender is blocked by a barrier), or a barrier that others must join.
    Held,
}

/// Barrier alignment over `senders` inputs.
#[derive(Debug)]
pub(crate) struct BarrierAligner {
    /// Per sender: the barrier that blocks it, if any.
    blocked: Vec<Option<CheckpointId>>,
    ended: Vec<bool>,
    held: VecDeque<(usize, StreamMessage)>,
}

impl BarrierAligner {
    pub fn new(senders: usize) -> Self {
        Self { blocked: vec![None; senders], ended: vec![false; senders], held: VecDeque::new() }
    }

    /// Classifies a message from `sender`.
    pub fn accept(&mut self, sender: usize, message: StreamMessage) -> Aligned {
        if sender >= self.blocked.len() {
            return Aligned::Process(sender, message);
        }
        if self.blocked[sender].is_some() {
            self.held.push_back((sender, message));
            return Aligned::Held;
        }
        match message {
            StreamMessage::Barrier(checkpoint) => {
                // A newer barrier than the one others are aligning on means the older
                // checkpoint was abandoned upstream; align on the newest.
                for b in self.blocked.iter_mut().flatten() {
                    if *b < checkpoint {
                        *b = checkpoint;
                    }
                }
                self.blocked[sender] = Some(checkpoint);
                self.complete()
            }
            StreamMessage::EndOfStream => {
                self.ended[sender] = true;
                if let Aligned::Snapshot(checkpoint) = self.complete() {
                    // The sender's end completes the alignment; the task must snapshot before
                    // handling the end, so hand the end back through the held queue.
                    self.held.push_front((sender, StreamMessage::EndOfStream));
                    return Aligned::Snapshot(checkpoint);
                }
                Aligned::Process(sender, StreamMessage::EndOfStream)
            }
            other => Aligned::Process(sender, other),
        }
    }

    /// After a snapshot: the messages held back, to be fed through [`Self::accept`] again in
    /// this order (they may block again on the next barrier).
    pub fn release(&mut self) -> Vec<(usize, StreamMessage)> {
        for b in &mut self.blocked {
            *b = None;
        }
        self.held.drain(..).collect()
    }

    fn complete(&mut self) -> Aligned {
        let Some(checkpoint) = self.blocked.iter().flatten().max().copied() else {
            return Aligned::Held;
        };
        let all = self.blocked.iter().zip(&self.ended).all(|(b, ended)| *ended || b.is_some());
        if all { Aligned::Snapshot(checkpoint) } else { Aligned::Held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_types::Watermark;

    fn is_process(a: &Aligned, sender: usize) -> bool {
        matches!(a, Aligned::Process(s, _) if *s == sender)
    }

    #[test]
    fn messages_after_a_barrier_wait_for_the_other_senders_barrier() {
        let mut a = BarrierAligner::new(2);
        assert!(is_process(&a.accept(0, StreamMessage::Watermark(Watermark(1))), 0));
        assert!(matches!(a.accept(0, StreamMessage::Barrier(CheckpointId(1))), Aligned::Held));
        assert!(matches!(a.accept(0, StreamMessage::Watermark(Watermark(2))), Aligned::Held));
        assert!(is_process(&a.accept(1, StreamMessage::Watermark(Watermark(3))), 1));
        assert!(matches!(
            a.accept(1, StreamMessage::Barrier(CheckpointId(1))),
            Aligned::Snapshot(CheckpointId(1))
        ));
        let released = a.release();
        assert_eq!(released.len(), 1);
        assert!(matches!(released[0], (0, StreamMessage::Watermark(Watermark(2)))));
    }

    #[test]
    fn an_ended_sender_needs_no_barrier() {
        let mut a = BarrierAligner::new(2);
        assert!(matches!(a.accept(0, StreamMessage::Barrier(CheckpointId(4))), Aligned::Held));
        assert!(matches!(a.accept(1, StreamMessage::EndOfStream), Aligned::Snapshot(CheckpointId(4))));
        let released = a.release();
        assert!(matches!(released[..], [(1, StreamMessage::EndOfStream)]));
        assert!(is_process(&a.accept(1, StreamMessage::EndOfStream), 1));
        // Only sender 0 is live now: its barriers complete on their own.
        assert!(matches!(
            a.accept(0, StreamMessage::Barrier(CheckpointId(5))),
            Aligned::Snapshot(CheckpointId(5))
        ));
    }

    #[test]
    fn one_sender_aligns_at_once() {
        let mut a = BarrierAligner::new(1);
        assert!(matches!(
            a.accept(0, StreamMessage::Barrier(CheckpointId(2))),
            Aligned::Snapshot(CheckpointId(2))
        ));
        assert!(a.release().is_empty());
    }
}
