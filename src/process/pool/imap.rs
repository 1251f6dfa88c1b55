//! The iterators of [`Pool::imap`](super::Pool::imap) and
//! [`Pool::imap_unordered`](super::Pool::imap_unordered), and of their
//! `_buffered` forms. They read their input as their results are taken,
//! keeping at most a given number of chunks submitted and not taken yet
//! (the plain forms: no limit, so all of the input is read at once).

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, Sender};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::queue::Feed;
use super::result::{per_item, Callback, Chunk, TaskOutcome};
use crate::error::Result;

/// `imap`'s results, in order.
pub(super) struct Ordered<I, R> {
    feed: Feed<I>,
    /// Chunks submitted and not taken yet, at most.
    ahead: usize,
    /// Those chunks, oldest first.
    chunks: VecDeque<Chunk<R>>,
    /// The results of the chunk taken last that are not yielded yet.
    out: std::vec::IntoIter<Result<R>>,
}

impl<I, R> Ordered<I, R>
where
    I: Iterator,
    I::Item: Serialize,
    R: DeserializeOwned,
{
    /// Submits the first `ahead` chunks of `feed`.
    pub(super) fn new(feed: Feed<I>, ahead: usize) -> Self {
        let mut it = Ordered {
            feed,
            ahead,
            chunks: VecDeque::new(),
            out: Vec::new().into_iter(),
        };
        it.fill();
        if it.chunks.is_empty() {
            it.chunks.extend(it.feed.queue().refused(|| None));
        }
        it
    }

    /// The whole input submitted, without the input itself (see
    /// [`Feed::drained`]).
    pub(super) fn submit_all(feed: Feed<I>) -> Ordered<std::iter::Empty<I::Item>, R> {
        let it = Ordered::new(feed, usize::MAX);
        Ordered {
            feed: it.feed.drained(),
            ahead: it.ahead,
            chunks: it.chunks,
            out: it.out,
        }
    }

    fn fill(&mut self) {
        while self.chunks.len() < self.ahead {
            match self.feed.submit(|_| None) {
                Some(chunk) => self.chunks.push_back(chunk),
                None => break,
            }
        }
    }
}

impl<I, R> Iterator for Ordered<I, R>
where
    I: Iterator,
    I::Item: Serialize,
    R: DeserializeOwned,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(r) = self.out.next() {
                return Some(r);
            }
            let chunk = self.chunks.pop_front()?;
            // Another chunk takes its place while it is waited for.
            self.fill();
            self.out = chunk.items().into_iter();
        }
    }
}

/// `imap_unordered`'s results, as their chunks end. The outcomes are
/// delivered by the chunks' callbacks and decoded by the caller's thread,
/// as `imap`'s are: a `Deserialize` that panicked in a callback would lose
/// its chunk.
pub(super) struct Unordered<I, R> {
    feed: Feed<I>,
    /// Chunks submitted and not taken yet, at most.
    ahead: usize,
    /// Those chunks' numbers of items (in the order submitted; one that
    /// delivers takes out one of its length): where none is delivered (a
    /// forked child, the pool's own thread), each is one error per item.
    left: VecDeque<usize>,
    /// What each new chunk's callback sends on; dropped once the input
    /// has ended, so that `outcomes` ends when every chunk has delivered.
    deliver: Option<Sender<Delivered>>,
    outcomes: Receiver<Delivered>,
    /// The results of the chunk taken last that are not yielded yet.
    out: std::vec::IntoIter<Result<R>>,
}

/// A chunk's outcome, and its number of items.
type Delivered = (TaskOutcome, usize);

/// The callback of a chunk of `len` items that sends its outcome on `tx`.
fn delivery(tx: Sender<Delivered>, len: usize) -> Option<Callback> {
    Some(Callback::delivery(move |o: &TaskOutcome| {
        let _ = tx.send((o.clone(), len));
    }))
}

impl<I, R> Unordered<I, R>
where
    I: Iterator,
    I::Item: Serialize,
    R: DeserializeOwned,
{
    /// Submits the first `ahead` chunks of `feed`.
    pub(super) fn new(feed: Feed<I>, ahead: usize) -> Self {
        let (tx, outcomes) = channel();
        let mut it = Unordered {
            feed,
            ahead,
            left: VecDeque::new(),
            deliver: Some(tx.clone()),
            outcomes,
            out: Vec::new().into_iter(),
        };
        it.fill();
        if it.left.is_empty() {
            let refused: Option<Chunk<R>> = it.feed.queue().refused(|| delivery(tx, 1));
            it.left.extend(refused.map(|chunk| chunk.len));
        }
        it
    }

    /// The whole input submitted, without the input itself (see
    /// [`Feed::drained`]).
    pub(super) fn submit_all(feed: Feed<I>) -> Unordered<std::iter::Empty<I::Item>, R> {
        let it = Unordered::new(feed, usize::MAX);
        Unordered {
            feed: it.feed.drained(),
            ahead: it.ahead,
            left: it.left,
            deliver: it.deliver,
            outcomes: it.outcomes,
            out: it.out,
        }
    }

    fn fill(&mut self) {
        while self.left.len() < self.ahead {
            let Some(tx) = &self.deliver else { break };
            match self.feed.submit::<R>(|len| delivery(tx.clone(), len)) {
                Some(chunk) => self.left.push_back(chunk.len),
                None => self.deliver = None,
            }
        }
    }

    /// The outcome of the next chunk to end, and its number of items, if
    /// any is left.
    fn next_outcome(&mut self) -> Option<Delivered> {
        let queue = self.feed.queue();
        // In a forked child, where the scheduler thread that delivers the
        // outcomes does not run, every chunk left is the error `imap`
        // gives there, not a wait for ever: the chunks submitted, and
        // those of the input not read yet (not submitted: the channel is
        // not touched, a fork may have copied it in the middle of a send).
        if !queue.is_owner() {
            let len = match self.left.pop_front() {
                Some(len) => len,
                None => self.feed.skip()?,
            };
            return Some((TaskOutcome::Foreign, len));
        }
        self.fill();
        // In one of the pool's callbacks (wherever the iterator was made),
        // on the thread that makes the deliveries: none comes while it
        // runs, so a chunk not delivered yet is not waited for (when none
        // is there, none of those left is delivered: any one of them).
        let delivered = if self.feed.queue().on_scheduler_thread() {
            match self.outcomes.try_recv() {
                Ok(delivered) => delivered,
                Err(_) => return Some((TaskOutcome::OnScheduler, self.left.pop_front()?)),
            }
        } else if self.left.is_empty() {
            return None;
        } else {
            self.outcomes.recv().ok()?
        };
        let len = delivered.1;
        if let Some(i) = self.left.iter().position(|&l| l == len) {
            self.left.remove(i);
        }
        Some(delivered)
    }
}

impl<I, R> Iterator for Unordered<I, R>
where
    I: Iterator,
    I::Item: Serialize,
    R: DeserializeOwned,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(r) = self.out.next() {
                return Some(r);
            }
            let (outcome, len) = self.next_outcome()?;
            self.out = per_item(outcome, len).into_iter();
        }
    }
}
