//! Reading an `apply` document while its requests run. A million associations are 150 MB
//! of JSON, which takes about half a second to parse: a thread of its own parses it and
//! hands the requests over in chunks, so the rules start on the first chunk instead of
//! waiting for the last, and the two share the machine's cores.
//!
//! Reading and running meet at the end: a document is kept only if all of it reads well,
//! and when a request is refused the reader still reads the rest, so that a malformed
//! document is always answered as malformed and a refusal can say "request 5 of 2000000",
//! whatever the two threads' timing.

use std::{
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use serde::de::{
    self, Deserialize as _, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Map, Value};

use crate::{
    api::ApplyOptions,
    model::{Refusal, Request},
};

/// Requests handed over at a time: few enough that the rules start at once, many enough
/// that the hand-overs cost nothing.
const CHUNK: usize = 4096;

/// Chunks read ahead of the rules at most: when the rules are slower, the reader waits
/// instead of holding the whole document as requests.
const AHEAD: usize = 16;

/// A document read to its end.
#[derive(Clone, Copy, Debug)]
pub struct Read {
    pub options: ApplyOptions,
    /// How many requests it holds.
    pub requests: usize,
    /// The reader's own time, spent beside the rules'.
    pub parse_time: Duration,
}

/// The requests of a document being read, chunk by chunk in their order.
pub struct Incoming<'scope> {
    chunks: mpsc::Receiver<Vec<Request>>,
    reader: thread::ScopedJoinHandle<'scope, Result<Read, Refusal>>,
    parsed: &'scope AtomicUsize,
}

impl Iterator for Incoming<'_> {
    type Item = Vec<Request>;

    /// The next chunk; `None` once the document has no more (or does not read further).
    fn next(&mut self) -> Option<Vec<Request>> {
        self.chunks.recv().ok()
    }
}

impl<'scope> Incoming<'scope> {
    /// How many requests have been read so far, handed over or not.
    pub fn parsed(&self) -> &'scope AtomicUsize {
        self.parsed
    }

    /// Reads the document to its end (chunks not taken are dropped): what it asks and how
    /// many requests it holds, or why it is malformed.
    pub fn finish(self) -> Result<Read, Refusal> {
        drop(self.chunks);
        self.reader.join().unwrap_or_else(|_| Err(Refusal::invalid("the document's reader failed")))
    }
}

/// Reads `body` on a thread of its own while `run` takes its requests. `announce` learns
/// whether the document asks for progress as soon as that is sure: when its requests begin,
/// if `progress` came before them (as `eipctl` writes it), or else at its end.
pub fn read_while<T>(
    body: &[u8],
    announce: impl FnOnce(bool) + Send,
    run: impl FnOnce(Incoming<'_>) -> T,
) -> T {
    let parsed = AtomicUsize::new(0);
    thread::scope(|scope| {
        let (sender, chunks) = mpsc::sync_channel(AHEAD);
        let parsed = &parsed;
        let reader = thread::Builder::new()
            .name("apply-reader".into())
            .spawn_scoped(scope, move || read(body, sender, parsed, announce))
            .expect("a thread to read the document");
        run(Incoming { chunks, reader, parsed })
    })
}

/// The reader's thread: parses the document, sending its requests to `sender`.
fn read(
    body: &[u8],
    sender: mpsc::SyncSender<Vec<Request>>,
    parsed: &AtomicUsize,
    announce: impl FnOnce(bool),
) -> Result<Read, Refusal> {
    let started = Instant::now();
    let mut document =
        Document { sink: Sink { sender: Some(sender), parsed }, announce: Some(announce) };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let options = (&mut deserializer)
        .deserialize_map(&mut document)
        .and_then(|options| deserializer.end().map(|()| options))
        .map_err(|e| Refusal::invalid(format!("malformed request: {e}")));
    // Whatever happened, the answer's form is decided now at the latest.
    if let Some(announce) = document.announce.take() {
        announce(options.as_ref().is_ok_and(|options| options.progress));
    }
    let requests = parsed.load(Ordering::Relaxed);
    Ok(Read { options: options?, requests, parse_time: started.elapsed() })
}

/// Where the requests go: to the rules while they take them, and only counted once they
/// stop (refused).
struct Sink<'a> {
    sender: Option<mpsc::SyncSender<Vec<Request>>>,
    /// How many requests have been read (this thread alone counts them).
    parsed: &'a AtomicUsize,
}

impl Sink<'_> {
    fn send(&mut self, chunk: Vec<Request>) {
        self.parsed.fetch_add(chunk.len(), Ordering::Relaxed);
        if let Some(sender) = &self.sender
            && sender.send(chunk).is_err()
        {
            self.sender = None;
        }
    }
}

/// The document's top-level object.
struct Document<'a, A> {
    sink: Sink<'a>,
    announce: Option<A>,
}

impl<'de, A: FnOnce(bool)> Visitor<'de> for &mut Document<'_, A> {
    type Value = ApplyOptions;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with the field `requests`")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<ApplyOptions, M::Error> {
        // The options are a few small fields: kept as they come, and read as
        // `ApplyOptions` says when the object ends (`progress` when the requests begin).
        let mut options = Map::new();
        let mut requests = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "requests" {
                if std::mem::replace(&mut requests, true) {
                    return Err(de::Error::duplicate_field("requests"));
                }
                if options.contains_key("progress")
                    && let Some(announce) = self.announce.take()
                {
                    announce(read_options(options.clone()).is_ok_and(|o| o.progress));
                }
                map.next_value_seed(Requests { sink: &mut self.sink })?;
            } else if options.insert(key.clone(), map.next_value()?).is_some() {
                // As a derived `Deserialize` would.
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
        }
        if !requests {
            return Err(de::Error::missing_field("requests"));
        }
        read_options(options).map_err(de::Error::custom)
    }
}

/// The options among the document's other fields (which it ignores).
fn read_options(fields: Map<String, Value>) -> serde_json::Result<ApplyOptions> {
    ApplyOptions::deserialize(Value::Object(fields))
}

/// The `requests` array, sent on in chunks as it is parsed.
struct Requests<'s, 'a> {
    sink: &'s mut Sink<'a>,
}

impl<'de> DeserializeSeed<'de> for Requests<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Requests<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of requests")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        let mut chunk = Vec::with_capacity(CHUNK);
        while let Some(request) = seq.next_element::<Request>()? {
            chunk.push(request);
            if chunk.len() == CHUNK {
                self.sink.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
            }
        }
        self.sink.send(chunk);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;

    use super::*;

    /// A document of `count` region requests, with `before` and `after` written around them.
    fn document(before: &str, count: usize, after: &str) -> String {
        let requests: Vec<String> =
            (0..count).map(|i| format!(r#"{{"op":"create_region","id":"r{i}"}}"#)).collect();
        format!(r#"{{{before}"requests":[{}]{after}}}"#, requests.join(","))
    }

    /// Reads `body` taking every request: their ids in order, what finish says, and
    /// whether progress was announced before the first chunk came, and as what.
    fn read_all(body: &str) -> (Vec<String>, Result<Read, Refusal>, Option<bool>, bool) {
        let (announced, announcement) = channel();
        let announce = move |progress| announced.send(progress).unwrap();
        read_while(body.as_bytes(), announce, |mut incoming| {
            let mut ids = Vec::new();
            let mut first = None;
            for chunk in incoming.by_ref() {
                first.get_or_insert_with(|| announcement.try_recv().ok());
                for request in chunk {
                    let Request::CreateRegion { id } = request else { panic!("{request:?}") };
                    ids.push(id.to_string());
                }
            }
            let read = incoming.finish();
            let early = first.flatten();
            let late = early.is_none() && announcement.try_recv().is_ok();
            (ids, read, early, late)
        })
    }

    #[test]
    fn requests_come_in_order_and_options_wherever_they_are() {
        let count = 2 * CHUNK + 7;
        let expected: Vec<String> = (0..count).map(|i| format!("r{i}")).collect();
        for (before, after, options) in [
            ("", "", ApplyOptions::default()),
            (
                r#""dry_run":true,"progress":true,"list_at_most":5,"#,
                "",
                ApplyOptions { dry_run: true, progress: true, list_at_most: Some(5) },
            ),
            (
                r#""colour":[1,{"a":2}],"#,
                r#","progress":true"#,
                ApplyOptions { progress: true, ..Default::default() },
            ),
        ] {
            let (ids, read, _, _) = read_all(&document(before, count, after));
            let read = read.expect("the document reads");
            assert_eq!(ids, expected);
            assert_eq!((read.options, read.requests), (options, count));
        }
    }

    #[test]
    fn progress_is_announced_as_soon_as_it_is_sure() {
        // More chunks than the reader may send ahead: it cannot reach the end of the
        // document before the first chunk is taken, whatever the threads' timing.
        let count = (AHEAD + 4) * CHUNK;
        // Before the requests, it is known when they begin.
        let (_, _, early, late) = read_all(&document(r#""progress":true,"#, count, ""));
        assert_eq!((early, late), (Some(true), false));
        // After them, or not given, only at the end.
        let (_, _, early, late) = read_all(&document("", count, r#","progress":true"#));
        assert_eq!((early, late), (None, true));
        let (_, _, early, late) = read_all(&document("", count, ""));
        assert_eq!((early, late), (None, true));
        // `eipctl`'s body writes its options first.
        let options = ApplyOptions { progress: true, ..Default::default() };
        let requests = vec![Request::CreateRegion { id: "r0".into() }; count];
        let body = serde_json::to_string(&crate::api::ApplyBody { options, requests }).unwrap();
        let (_, read, early, _) = read_all(&body);
        assert_eq!((read.expect("it reads").options, early), (options, Some(true)));
    }

    #[test]
    fn a_malformed_document_says_what_is_wrong_after_its_good_requests() {
        let good = document("", CHUNK + 1, "");
        let cases = [
            (good.replace(r#""r3""#, "3"), "invalid type: integer `3`"),
            (good.replace(r#""requests""#, r#""requests":[],"requests""#), "duplicate field"),
            (good.replace(r#""requests""#, r#""request""#), "missing field `requests`"),
            (format!("{good} x"), "trailing characters"),
            (good[..good.len() - 20].to_string(), "EOF while parsing"),
            (r#"{"progress":"yes","requests":[]}"#.into(), "invalid type: string"),
        ];
        for (body, says) in cases {
            let (_, read, _, _) = read_all(&body);
            let refusal = read.expect_err(says);
            assert!(refusal.message.starts_with("malformed request: "), "{refusal:?}");
            assert!(refusal.message.contains(says), "{says}: {refusal:?}");
        }
    }

    #[test]
    fn a_reader_left_early_still_reads_and_counts_the_rest() {
        let count = 5 * CHUNK;
        let body = document(r#""dry_run":true,"#, count, "");
        let read = read_while(
            body.as_bytes(),
            |_| {},
            |mut incoming| {
                assert_eq!(incoming.next().map(|chunk| chunk.len()), Some(CHUNK));
                incoming.finish()
            },
        );
        let read = read.expect("the document reads");
        assert_eq!((read.requests, read.options.dry_run), (count, true));
        // And the rest is still checked: here its last request is a number.
        let broken = format!("{},5]}}", &body[..body.len() - 2]);
        let read = read_while(
            broken.as_bytes(),
            |_| {},
            |mut incoming| {
                incoming.next();
                incoming.finish()
            },
        );
        let refusal = read.expect_err("the last request is malformed");
        assert!(refusal.message.contains("invalid type: integer `5`"), "{refusal:?}");
    }
}
