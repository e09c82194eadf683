//! Inbound later fragments that came before their first fragment. Only the first fragment
//! of a port-translated datagram carries the port that says where the datagram goes, and XDP
//! cannot keep a frame until it comes: the program hands such a frame to the agent on the
//! `HELD_FRAGMENTS` ring and drops it. The agent keeps it until the first fragment has
//! passed (the program says so on the same ring, or the agent finds it in `FRAGMENTS`), then
//! runs it through the gateway program again with BPF_PROG_TEST_RUN in live-frames mode,
//! as if it came in again on the same interface: the program translates it like any later
//! fragment, and the kernel sends it on. Frames whose first fragment never comes are let go
//! after [`FRAGMENT_TIMEOUT_NS`], as the program forgets a first fragment.

use std::{
    collections::HashMap,
    os::fd::{AsFd, BorrowedFd},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp},
};
use eipgw_common::{
    FRAGMENT_TIMEOUT_NS, FragmentKey, FragmentTarget, HELD_FRAME_BYTES, HELD_KIND_FRAME,
    HELD_KIND_RELEASE, HeldFrame, HeldRelease,
};

/// At most this many frames wait at once (about 6 MB); more are dropped, as a host's
/// reassembly drops fragments beyond its memory limit.
const MAX_WAITING_FRAMES: usize = 4096;
const HOLD_FOR: Duration = Duration::from_nanos(FRAGMENT_TIMEOUT_NS);

pub struct HeldFragments {
    ring: RingBuf<MapData>,
    fragments: BpfHashMap<MapData, FragmentKey, FragmentTarget>,
    waiting: HashMap<FragmentKey, Vec<Waiting>>,
    frames: usize,
}

struct Waiting {
    ifindex: u32,
    frame: Vec<u8>,
    since: Instant,
}

/// What one [`HeldFragments::release`] did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HeldReport {
    /// Frames sent through the program again.
    pub sent: usize,
    /// Frames let go: their first fragment did not come in time, or no room was left.
    pub dropped: usize,
    /// Frames waiting now.
    pub waiting: usize,
}

/// A record on the ring.
enum Record {
    Frame { ifindex: u32, key: FragmentKey, frame: Vec<u8> },
    Release(FragmentKey),
}

impl HeldFragments {
    pub fn new(
        ring: RingBuf<MapData>,
        fragments: BpfHashMap<MapData, FragmentKey, FragmentTarget>,
    ) -> Self {
        Self { ring, fragments, waiting: HashMap::new(), frames: 0 }
    }

    /// Readable when the program has put records on the ring.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }

    /// Takes what the program put on the ring, sends the frames whose first fragment has
    /// passed through `program` again, and lets go of those that waited too long.
    /// `now_ns` is the program's clock (CLOCK_MONOTONIC).
    pub fn release(&mut self, program: &Xdp, now: Instant, now_ns: u64) -> HeldReport {
        let mut report = HeldReport::default();
        let mut ready = Vec::new();
        let mut records = Vec::new();
        // Bounded, so that a flood of early fragments cannot keep the agent here.
        while records.len() < MAX_WAITING_FRAMES
            && let Some(item) = self.ring.next()
        {
            match parse(&item) {
                Some(record) => records.push(record),
                None => log::warn!("a record of {} bytes on the held-fragment ring", item.len()),
            }
        }
        for record in records {
            match record {
                Record::Frame { ifindex, key, frame } => {
                    // The first fragment may have passed before this frame reached us.
                    if self.first_passed(&key, now_ns) {
                        ready.push((ifindex, frame));
                    } else if self.frames >= MAX_WAITING_FRAMES {
                        report.dropped += 1;
                    } else {
                        let waiting = Waiting { ifindex, frame, since: now };
                        self.waiting.entry(key).or_default().push(waiting);
                        self.frames += 1;
                    }
                }
                Record::Release(key) => {
                    if let Some(frames) = self.waiting.remove(&key) {
                        self.frames -= frames.len();
                        ready.extend(frames.into_iter().map(|w| (w.ifindex, w.frame)));
                    }
                }
            }
        }
        for (ifindex, frame) in ready {
            match run_live(program, ifindex, &frame) {
                Ok(()) => report.sent += 1,
                Err(e) => {
                    log::warn!("{e:#}");
                    report.dropped += 1;
                }
            }
        }
        let before = self.frames;
        self.waiting.retain(|_, frames| {
            frames.retain(|w| now.duration_since(w.since) < HOLD_FOR);
            !frames.is_empty()
        });
        self.frames = self.waiting.values().map(Vec::len).sum();
        report.dropped += before - self.frames;
        report.waiting = self.frames;
        report
    }

    /// Whether the first fragment of `key`'s datagram passed recently enough that the
    /// program translates the rest (see `nat::fragment_translation`); otherwise a frame sent
    /// again would only be held again.
    fn first_passed(&self, key: &FragmentKey, now_ns: u64) -> bool {
        self.fragments
            .get(key, 0)
            .is_ok_and(|target| now_ns.saturating_sub(target.created_ns) < FRAGMENT_TIMEOUT_NS)
    }
}

fn parse(record: &[u8]) -> Option<Record> {
    let kind = u32::from_ne_bytes(record.get(..4)?.try_into().ok()?);
    match kind {
        HELD_KIND_FRAME if record.len() >= size_of::<HeldFrame>() => {
            // SAFETY: the record holds a whole `HeldFrame` (plain integers and bytes); the
            // ring aligns records to 8 bytes only, hence the unaligned read.
            let held = unsafe { record.as_ptr().cast::<HeldFrame>().read_unaligned() };
            let len = (held.len as usize).min(HELD_FRAME_BYTES);
            Some(Record::Frame {
                ifindex: held.ifindex,
                key: held.key,
                frame: held.frame[..len].to_vec(),
            })
        }
        HELD_KIND_RELEASE if record.len() >= size_of::<HeldRelease>() => {
            // SAFETY: as above, for a `HeldRelease`.
            let release = unsafe { record.as_ptr().cast::<HeldRelease>().read_unaligned() };
            Some(Record::Release(release.key))
        }
        _ => None,
    }
}

/// Runs `program` on `frame` as if it came in on `ifindex`, and lets the kernel act on
/// the verdict (redirect, transmit or pass), as the interface's own XDP hook would.
fn run_live(program: &Xdp, ifindex: u32, frame: &[u8]) -> anyhow::Result<()> {
    let ctx = xdp_md(frame.len(), ifindex);
    program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: 1,
            attrs: TestRunAttrs::new().xdp_live_frames(1),
            ..TestRunOptions::new()
        })
        .with_context(|| {
            format!("sending a held fragment through the program (ifindex {ifindex})")
        })?;
    Ok(())
}

/// `struct xdp_md` for BPF_PROG_TEST_RUN's `ctx_in`: the frame spans data..data_end with
/// no metadata, and the ingress interface picks both the direction and the namespace whose
/// FIB `bpf_fib_lookup` consults. Fields are u32 in the order of include/uapi/linux/bpf.h.
pub fn xdp_md(frame_len: usize, ingress_ifindex: u32) -> Vec<u8> {
    let (data, data_end, data_meta, rx_queue_index, egress_ifindex) =
        (0, frame_len as u32, 0, 0, 0);
    let fields = [data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex];
    fields.map(u32::to_ne_bytes).concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FragmentKey {
        FragmentKey { src: 0x0a00_0001, dst: 0xcb00_7114, id: 0x4242, proto: 17, _pad: 0 }
    }

    fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: `T` is one of the plain #[repr(C)] records, read as bytes.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn a_frame_record_gives_its_frame_and_no_more() {
        let mut held = HeldFrame {
            kind: HELD_KIND_FRAME,
            ifindex: 7,
            len: 3,
            key: key(),
            frame: [0xee; HELD_FRAME_BYTES],
        };
        held.frame[..3].copy_from_slice(&[1, 2, 3]);
        let Some(Record::Frame { ifindex, key: got, frame }) = parse(&bytes_of(&held)) else {
            panic!("not read as a frame");
        };
        assert_eq!((ifindex, got, frame), (7, key(), vec![1, 2, 3]));
    }

    #[test]
    fn a_release_record_names_its_datagram() {
        let release = HeldRelease { kind: HELD_KIND_RELEASE, key: key() };
        assert!(matches!(parse(&bytes_of(&release)), Some(Record::Release(k)) if k == key()));
    }

    #[test]
    fn short_or_unknown_records_are_refused() {
        let release = bytes_of(&HeldRelease { kind: HELD_KIND_RELEASE, key: key() });
        assert!(parse(&release[..15]).is_none());
        // A frame record cut short.
        let mut frame = vec![0u8; 100];
        frame[..4].copy_from_slice(&HELD_KIND_FRAME.to_ne_bytes());
        assert!(parse(&frame).is_none());
        assert!(parse(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
        assert!(parse(&[]).is_none());
    }
}
