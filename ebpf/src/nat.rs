//! The NAT gateway's paths (R25–R27): DNAT port mappings, stateless both ways, and SNAT with
//! port translation and a session table. (A DNAT IP mapping is plain 1:1 NAT, `gateway`.)
//!
//! Both directions are global BPF functions, like the policy checks: the verifier checks
//! each once instead of once per path of the main program, which is near its limit. They
//! take the context and scalars only, so each parses the frame again and does the whole
//! job, route and redirect included, returning the packed [`Outcome`].
//!
//! A session is one private (address, port, protocol) bound to one public (EIP, port):
//! endpoint-independent mapping (RFC 4787 REQ-1), so every destination sees the same
//! public port while the session lives. The program creates and refreshes sessions; the
//! agent deletes expired ones (it reads the same [`SnatConfig`]), which is what frees
//! their ports. A port is claimed in `SNAT_PORTS` with BPF_NOEXIST before its session is
//! written, so two CPUs never hand out one port.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action, xdp_md},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, generated::bpf_xdp_load_bytes},
    programs::XdpContext,
};
use eipgw_common::{
    Endpoint, FRAGMENT_TIMEOUT_NS, FragmentKey, FragmentTarget, HELD_FRAME_BYTES, HELD_KIND_FRAME,
    HELD_KIND_RELEASE, HeldFrame, HeldRelease, MODE_NAT_GATEWAY, SNAT_PORT_PROBES, SnatConfig,
    SnatSession, Verdict,
    checksum::{self, QuotedChecksums, QuotedL4},
    initial_state,
    policy::{PROTO_ICMP, PROTO_TCP, PROTO_UDP},
    probe_port, tcp_next_state,
};

use crate::{
    DNAT_PORTS, DNAT_REVERSE, EIPS, FRAGMENTS, HELD_FRAGMENTS, HELD_KEYS, NAT_SCRATCH, SNAT_CONFIG,
    SNAT_PORTS, SNAT_SESSIONS, SNAT_SOURCES,
    counters::{Direction, EipDrop, count_eip, count_eip_drop},
    forward::{Outcome, deliver},
    gateway::{Ingress, ingress},
    icmp::{self, RouterError},
    packet::{Ipv4Frame, L4Checksum, Malformed, Quoted, parse_ipv4, ptr_at},
    policy,
    route::{self, Flow, Route},
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS_OFFSET: usize = 13;

/// The NAT gateway program's work for an IPv4 frame the main program handed over (by tail
/// call): inbound to a NAT gateway's EIP (`EIPS` mode `MODE_NAT_GATEWAY`), where a DNAT
/// port mapping or the SNAT session holding the destination port says where it goes; or
/// outbound from a private address with no EIP of its own and no DNAT IP mapping
/// (`PRIVATE_IPS` missed), routed to the Internet, where a DNAT port mapping's replies leave
/// from the EIP's port and SNAT sources through their session.
#[inline(always)]
fn process(ctx: &XdpContext) -> Result<Next, Malformed> {
    let frame = parse_ipv4(ctx)?;
    match ingress(ctx) {
        Some(Ingress::Wan { own_addr, .. }) => {
            // SAFETY: copied out at once.
            match unsafe { EIPS.get(&frame.dst()) }.copied() {
                Some(entry) if entry.mode == MODE_NAT_GATEWAY => {
                    inbound(ctx, &frame, entry.stats_slot, own_addr)
                }
                // Changed since the main program looked.
                _ => done(Outcome::drop(Verdict::DropNoNatMapping)),
            }
        }
        Some(Ingress::Lan { own_addr, .. }) => outbound(ctx, &frame, own_addr),
        None => done(Outcome::pass(Verdict::PassNotTranslated)),
    }
}

/// Where a frame's flow is translated to: the new address and port (network byte order)
/// for the private or public side, and the EIP's counter slot.
#[derive(Copy, Clone)]
struct Translation {
    addr: u32,
    port: u16,
    slot: u32,
}

/// The port fields of a TCP or UDP header, or for ICMP echo the identifier (which stands
/// for both ports), with the checksum that covers them.
struct Ports {
    src: *mut u16,
    dst: *mut u16,
    check: PortCheck,
    /// TCP flags; 0 for other protocols.
    tcp_flags: u8,
}

#[derive(Copy, Clone)]
enum PortCheck {
    Tcp(*mut [u8; 2]),
    /// 0 means "no checksum" and stays 0.
    Udp(*mut [u8; 2]),
    Icmp(*mut [u8; 2]),
}

impl Ports {
    #[inline(always)]
    fn src(&self) -> u16 {
        // SAFETY: bounds-checked by `ports`.
        unsafe { *self.src }
    }

    #[inline(always)]
    fn dst(&self) -> u16 {
        // SAFETY: as above.
        unsafe { *self.dst }
    }

    /// Rewrites the port `at` points to (one of ours), fixing the checksum that covers it.
    #[inline(always)]
    fn set(&self, at: *mut u16, new: u16) {
        // SAFETY: `at` is `src` or `dst`, and the checksum pointer was bounds-checked too.
        unsafe {
            let old = *at;
            *at = new;
            match self.check {
                PortCheck::Tcp(check) | PortCheck::Icmp(check) => {
                    let c = u16::from_ne_bytes(*check);
                    *check = checksum::replace_u16(c, old, new).to_ne_bytes();
                }
                PortCheck::Udp(check) => {
                    let c = u16::from_ne_bytes(*check);
                    *check = checksum::udp_replace_u16(c, old, new).to_ne_bytes();
                }
            }
        }
    }
}

/// The ports of a TCP or UDP frame, or the identifier of an ICMP echo message of
/// `echo_type`; `None` for anything else (and for a later fragment, which has none).
#[inline(always)]
fn ports(ctx: &XdpContext, frame: &Ipv4Frame, echo_type: u8) -> Result<Option<Ports>, Malformed> {
    let at = frame.l4_offset();
    Ok(match (frame.proto(), frame.l4) {
        (PROTO_TCP, L4Checksum::Tcp(check)) => {
            let ports: *mut [u16; 2] = ptr_at(ctx, at)?;
            let flags: *const u8 = ptr_at(ctx, at + TCP_FLAGS_OFFSET)?;
            // SAFETY: bounds-checked just above.
            let tcp_flags = unsafe { *flags };
            let src = ports as *mut u16;
            // SAFETY: the second of the two words checked above.
            let dst = unsafe { src.add(1) };
            Some(Ports { src, dst, check: PortCheck::Tcp(check), tcp_flags })
        }
        (PROTO_UDP, L4Checksum::Udp(check)) => {
            let ports: *mut [u16; 2] = ptr_at(ctx, at)?;
            let src = ports as *mut u16;
            // SAFETY: as above.
            let dst = unsafe { src.add(1) };
            Some(Ports { src, dst, check: PortCheck::Udp(check), tcp_flags: 0 })
        }
        (PROTO_ICMP, _) if !frame.is_later_fragment() => {
            // Type and code, checksum, identifier.
            let header: *mut [u16; 3] = ptr_at(ctx, at)?;
            let words = header as *mut u16;
            // SAFETY: bounds-checked just above.
            let type_code = unsafe { *words };
            if type_code.to_ne_bytes()[0] != echo_type {
                return Ok(None);
            }
            // SAFETY: the second and third words of the three checked above.
            let (check, id) = unsafe { (words.add(1) as *mut [u8; 2], words.add(2)) };
            Some(Ports { src: id, dst: id, check: PortCheck::Icmp(check), tcp_flags: 0 })
        }
        _ => None,
    })
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn config() -> SnatConfig {
    SNAT_CONFIG.get(0).copied().unwrap_or_default().or_default()
}

/// The datagram a fragment belongs to, as it arrived.
#[inline(always)]
fn fragment_key(frame: &Ipv4Frame) -> FragmentKey {
    FragmentKey {
        src: frame.src(),
        dst: frame.dst(),
        id: frame.id(),
        proto: frame.proto(),
        _pad: 0,
    }
}

/// Notes how the first fragment of a datagram was translated (the address that replaces
/// its destination inbound, its source outbound), for the fragments that follow it.
#[inline(always)]
fn remember_fragment(frame: &Ipv4Frame, translation: &Translation) {
    if frame.is_first_fragment() {
        let target = FragmentTarget {
            addr: translation.addr,
            stats_slot: translation.slot,
            created_ns: now_ns(),
        };
        let key = fragment_key(frame);
        // LRU: a full table forgets the oldest datagram, whose fragments are long gone.
        let _ = FRAGMENTS.insert(&key, &target, 0);
        // Later fragments that came first wait with the agent: they can follow now.
        // SAFETY: only whether there is a value is looked at.
        if unsafe { HELD_KEYS.get(&key) }.is_some() {
            let _ = HELD_KEYS.remove(&key);
            let _ = HELD_FRAGMENTS.output(&HeldRelease { kind: HELD_KIND_RELEASE, key }, 0);
        }
    }
}

/// Hands an inbound later fragment whose first fragment has not passed yet to the agent,
/// which sends it through the program again once it has (see `HELD_FRAGMENTS`).
#[inline(always)]
fn hold_fragment(ctx: &XdpContext, frame: &Ipv4Frame) -> Outcome {
    let key = fragment_key(frame);
    let id_proto = key.id as u32 | (key.proto as u32) << 16;
    Outcome::unpack(eipgw_nat_hold_fragment(ctx.ctx, key.src, key.dst, id_proto))
}

/// [`hold_fragment`]'s work, a global function so that the copy is verified once. `src`,
/// `dst` and `id_proto` (the identification, with the protocol above it) name the
/// datagram ([`FragmentKey`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn eipgw_nat_hold_fragment(
    ctx: *mut xdp_md,
    src: u32,
    dst: u32,
    id_proto: u32,
) -> u32 {
    let context = XdpContext::new(ctx);
    let unmatched = Outcome::drop(Verdict::DropFragmentUnmatched).pack();
    let len = context.data_end().saturating_sub(context.data());
    if len == 0 || len > HELD_FRAME_BYTES {
        return unmatched;
    }
    let Some(mut entry) = HELD_FRAGMENTS.reserve::<HeldFrame>(0) else {
        return unmatched;
    };
    let key = FragmentKey { src, dst, id: id_proto as u16, proto: (id_proto >> 16) as u8, _pad: 0 };
    let held = entry.as_mut_ptr();
    // SAFETY: `held` is the reserved record; `len` is within its frame buffer (checked
    // above), and the helper copies from the packet, bounds-checked by the kernel.
    let copied = unsafe {
        (*held).kind = HELD_KIND_FRAME;
        (*held).ifindex = context.ingress_ifindex() as u32;
        (*held).len = len as u32;
        (*held).key = key;
        // The same `len`, in a form whose range the verifier sees as 1..=2048 (it lost the
        // check for 0 above to the optimizer's merged comparison).
        let size = ((len as u32 - 1) & (HELD_FRAME_BYTES as u32 - 1)) + 1;
        bpf_xdp_load_bytes(ctx, 0, (*held).frame.as_mut_ptr().cast(), size)
    };
    if copied != 0 {
        entry.discard(0);
        return unmatched;
    }
    // Before the frame is on the ring: the first fragment, on another CPU, must find the
    // key once the agent can have the frame (if it finds it earlier, the agent looks the
    // first fragment up itself when the frame comes).
    let _ = HELD_KEYS.insert(&key, &0, 0);
    entry.submit(0);
    Outcome::drop(Verdict::FragmentHeld).pack()
}

/// How the first fragment of this (later) fragment's datagram was translated, if it
/// passed less than [`FRAGMENT_TIMEOUT_NS`] ago.
#[inline(always)]
fn fragment_translation(frame: &Ipv4Frame) -> Option<Translation> {
    // SAFETY: copied out at once.
    let target = unsafe { FRAGMENTS.get(&fragment_key(frame)) }.copied()?;
    (now_ns().saturating_sub(target.created_ns) < FRAGMENT_TIMEOUT_NS).then_some(Translation {
        addr: target.addr,
        port: 0,
        slot: target.stats_slot,
    })
}

/// Which side of the frame a translation rewrites. In an ICMP error, the quote is
/// translated the other way round (see [`eipgw_nat_translate_quote`]).
#[derive(Copy, Clone, PartialEq, Eq)]
enum Side {
    /// Inbound: destination address and port.
    Destination = 0,
    /// Outbound: source address and port.
    Source = 1,
}

#[inline(always)]
fn inbound(
    ctx: &XdpContext,
    frame: &Ipv4Frame,
    slot: u32,
    own_addr: u32,
) -> Result<Next, Malformed> {
    let eip = frame.dst();
    // The EIP's cap meters what arrives, before the mapping is known (as for 1:1 NAT).
    let decision = policy::eipgw_inbound_policy(ctx.ctx, slot, frame.src(), 0);
    if decision != policy::PASSES {
        return done(Outcome::unpack(decision));
    }
    let translation = if frame.is_later_fragment() {
        match fragment_translation(frame) {
            Some(t) => t,
            None => return done(hold_fragment(ctx, frame)),
        }
    } else if let Some(quoted) = &frame.quoted {
        // An error about a packet the EIP sent: from a DNAT'ed service, or a SNAT session.
        if quoted.src() != eip {
            return done(Outcome::drop(Verdict::DropIcmpErrorUnmatched));
        }
        let Some((proto, port, _)) = quoted_port(ctx, quoted, ICMP_ECHO_REQUEST, QUOTED_SRC)?
        else {
            return done(Outcome::drop(Verdict::DropIcmpErrorUnmatched));
        };
        // About a packet the EIP sent: no security group is asked (as for 1:1 NAT).
        match public_endpoint(Endpoint::new(eip, port, proto), false) {
            Some((t, _)) => t,
            None => return done(Outcome::drop(Verdict::DropNoNatMapping)),
        }
    } else {
        let Some(ports) = ports(ctx, frame, ICMP_ECHO_REPLY)? else {
            return done(Outcome::drop(Verdict::DropNoNatMapping));
        };
        let key = Endpoint::new(eip, ports.dst(), frame.proto());
        let Some((t, group)) = public_endpoint(key, true) else {
            return done(Outcome::drop(Verdict::DropNoNatMapping));
        };
        // The target's security group, as it would judge the frame at the instance.
        if group != 0 {
            let private_port = u16::from_be(t.port) as u32;
            let decision =
                policy::eipgw_dnat_policy(ctx.ctx, group, frame.src(), private_port, slot);
            if decision != policy::PASSES {
                return done(Outcome::unpack(decision));
            }
        }
        if frame.proto() == PROTO_TCP {
            note_inbound_tcp(&Endpoint::new(t.addr, t.port, PROTO_TCP), ports.tcp_flags);
        }
        t
    };
    let quote = frame.quoted.is_some();
    Ok(forward(Translation { slot, ..translation }, Side::Destination, quote, own_addr))
}

/// What a NAT gateway EIP's public endpoint leads to: a DNAT port mapping (with its
/// target's security group, 0 for none), or the SNAT session that holds the port (live;
/// `refresh` notes that a packet came back on it; no group: the instance opened it).
#[inline(always)]
fn public_endpoint(key: Endpoint, refresh: bool) -> Option<(Translation, u32)> {
    // SAFETY: values are copied out at once; the agent replaces DNAT entries whole.
    if key.proto != PROTO_ICMP
        && let Some(target) = unsafe { DNAT_PORTS.get(&key) }.copied()
    {
        let t = Translation { addr: target.addr, port: target.port, slot: target.stats_slot };
        return Some((t, target.security_group));
    }
    // SAFETY: as above.
    let private = unsafe { SNAT_PORTS.get(&key) }.copied()?;
    let session = SNAT_SESSIONS.get_ptr_mut(&private)?;
    let now = now_ns();
    // SAFETY: a pointer into the map value; other CPUs may write it at the same time, and
    // the worst a torn read does is refresh or reject one packet.
    unsafe {
        // The port must still be this session's: the agent deletes a session before its
        // port, so a stale port entry may briefly outlive it.
        if (*session).eip != key.addr || (*session).public_port != key.port {
            return None;
        }
        if config().expired(key.proto, &*session, now) {
            return None;
        }
        if refresh {
            (*session).last_seen_ns = now;
        }
        let t = Translation { addr: private.addr, port: private.port, slot: (*session).stats_slot };
        Some((t, 0))
    }
}

/// Moves the TCP session of `private` along for an inbound segment with `flags`.
#[inline(always)]
fn note_inbound_tcp(private: &Endpoint, flags: u8) {
    if let Some(session) = SNAT_SESSIONS.get_ptr_mut(private) {
        // SAFETY: as in `public_endpoint`.
        unsafe { (*session).state = tcp_next_state((*session).state, flags, false) };
    }
}

#[inline(always)]
fn outbound(ctx: &XdpContext, frame: &Ipv4Frame, own_addr: u32) -> Result<Next, Malformed> {
    let src = frame.src();
    if let Some(quoted) = &frame.quoted {
        // An error the private host sends about a packet that reached it through a port
        // translation: a DNAT port mapping's, or one that came back on a SNAT session.
        // The quote names the host as its destination, at the private port.
        if quoted.dst() != src {
            return done(Outcome::drop(Verdict::DropIcmpErrorUnmatched));
        }
        let Some((proto, port, _)) = quoted_port(ctx, quoted, ICMP_ECHO_REPLY, QUOTED_DST)? else {
            return done(Outcome::drop(Verdict::DropIcmpErrorUnmatched));
        };
        return match private_endpoint(&Endpoint::new(src, port, proto)) {
            Some(t) => Ok(forward(t, Side::Source, true, own_addr)),
            None => done(Outcome::drop(Verdict::DropIcmpErrorUnmatched)),
        };
    }
    // One call of `forward_outbound` for every kind of translation: each inlined copy
    // costs the verifier a walk of its own.
    let translation = if frame.is_later_fragment() {
        // The first fragment says how; failing that (it has not passed yet), a SNAT
        // source's address is the same for every datagram it sends (paired pooling).
        // SAFETY: copied out at once.
        let paired = unsafe { SNAT_SOURCES.get(&src) }.map(|s| Translation {
            addr: s.eip_addr,
            port: 0,
            slot: s.stats_slot,
        });
        match fragment_translation(frame).or(paired) {
            Some(t) => t,
            None => return done(Outcome::drop(Verdict::DropFragmentUnmatched)),
        }
    } else {
        let Some(ports) = ports(ctx, frame, ICMP_ECHO_REQUEST)? else {
            return done(Outcome::drop(Verdict::DropNoEgress));
        };
        let key = Endpoint::new(src, ports.src(), frame.proto());
        // SAFETY: copied out at once; the agent replaces entries whole.
        if let Some(target) = unsafe { DNAT_REVERSE.get(&key) }.copied() {
            // A DNAT port mapping's replies, stateless.
            Translation { addr: target.addr, port: target.port, slot: target.stats_slot }
        } else {
            // SAFETY: as above.
            let Some(source) = unsafe { SNAT_SOURCES.get(&src) }.copied() else {
                return done(Outcome::drop(Verdict::DropNoEgress));
            };
            // Answered as a router before any session is made for it.
            if frame.ttl() <= 1 {
                return Ok(Next::Answer(RouterError::TimeExceeded));
            }
            // An echo's identifier stands for both ports: the remote side has none of its own.
            let remote_port = if frame.proto() == PROTO_ICMP { 0 } else { ports.dst() };
            let remote = Endpoint::new(frame.dst(), remote_port, frame.proto());
            let (eip, slot) = (source.eip_addr, source.stats_slot);
            match session(&key, eip, slot, &remote, ports.tcp_flags) {
                Some(t) => t,
                None => {
                    count_eip_drop(slot, EipDrop::SnatRefused, 0);
                    return Ok(Next::Answer(RouterError::SnatRefused));
                }
            }
        }
    };
    Ok(forward(translation, Side::Source, false, own_addr))
}

/// The public endpoint a private endpoint is seen as: its DNAT port mapping's, or its live
/// SNAT session's (not refreshed: an error about a flow does not keep it alive).
#[inline(always)]
fn private_endpoint(key: &Endpoint) -> Option<Translation> {
    // SAFETY: copied out at once; the agent replaces entries whole.
    if let Some(target) = unsafe { DNAT_REVERSE.get(key) }.copied() {
        return Some(Translation { addr: target.addr, port: target.port, slot: target.stats_slot });
    }
    // SAFETY: as above; a torn read of a session another CPU writes rejects one error.
    let session = unsafe { SNAT_SESSIONS.get(key) }.copied()?;
    if config().expired(key.proto, &session, now_ns()) {
        return None;
    }
    Some(Translation { addr: session.eip, port: session.public_port, slot: session.stats_slot })
}

/// What comes after one of the program's steps (each a global function, so that the
/// verifier walks each once and the stack of one is not added to the next's).
enum Next {
    /// The frame's outcome.
    Done(Outcome),
    /// Answer the frame with this error (the gateway's address on the ingress side is in
    /// the scratch value).
    Answer(RouterError),
    /// Route and send the frame translated as the scratch value says, on this side, and
    /// if `quote`, translate the quote of the ICMP error it is.
    Forward { side: Side, quote: bool },
}

/// [`Next::pack`]: a packed [`Outcome`] has neither of these bits.
const NEXT_ANSWER: u32 = 1 << 31;
const NEXT_FORWARD: u32 = 1 << 30;
/// Below [`NEXT_FORWARD`]: the side (set: [`Side::Source`]), and whether to translate a
/// quote.
const NEXT_SOURCE: u32 = 1;
const NEXT_QUOTE: u32 = 2;

impl Next {
    #[inline(always)]
    fn pack(self) -> u32 {
        match self {
            Next::Done(outcome) => outcome.pack(),
            Next::Answer(error) => NEXT_ANSWER | error.pack(),
            Next::Forward { side, quote } => {
                let side = if side == Side::Source { NEXT_SOURCE } else { 0 };
                NEXT_FORWARD | side | if quote { NEXT_QUOTE } else { 0 }
            }
        }
    }
}

#[inline(always)]
fn done(outcome: Outcome) -> Result<Next, Malformed> {
    Ok(Next::Done(outcome))
}

/// What one step leaves the next: the translation and the gateway's own address on the
/// ingress side. Per CPU, and XDP runs one frame at a time on a CPU.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct Scratch {
    addr: u32,
    slot: u32,
    own_addr: u32,
    port: u16,
    _pad: u16,
}

/// The program (`eipgw_nat`, tail-called by the gateway program): decide, then route and
/// send, then answer with an ICMP error if a step asked for one.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> Outcome {
    let mut next = eipgw_nat_decide(ctx.ctx);
    if next & NEXT_FORWARD != 0 {
        let (inbound, quote) = (next & NEXT_SOURCE == 0, next & NEXT_QUOTE != 0);
        next = if inbound { eipgw_nat_forward_in(ctx.ctx) } else { eipgw_nat_forward_out(ctx.ctx) };
        // An error's quote is translated once the outer packet is rewritten and on its way
        // (a redirect happens after the program returns). Done by the step that forwards
        // it, the three calls' stacks together were more than the verifier allows.
        let forwarded = next & NEXT_ANSWER == 0 && next & 0xff != xdp_action::XDP_DROP;
        if forwarded
            && quote
            && let Some(scratch) = NAT_SCRATCH.get(0)
        {
            let quote = scratch.addr as u64 | (scratch.port as u64) << 32 | (inbound as u64) << 48;
            if eipgw_nat_translate_quote(ctx.ctx, quote) != 0 {
                next = Outcome::drop(Verdict::DropMalformed).pack();
            }
        }
    }
    if next & NEXT_ANSWER != 0 {
        let own_addr = NAT_SCRATCH.get(0).map_or(0, |s| s.own_addr);
        let error = RouterError::unpack(next & !NEXT_ANSWER);
        let fallback = error.unanswered().pack();
        next = icmp::eipgw_router_error(ctx.ctx, error.pack(), own_addr, fallback);
    }
    Outcome::unpack(next)
}

/// The first step: what the frame is for, and how it is translated.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn eipgw_nat_decide(ctx: *mut xdp_md) -> u32 {
    let ctx = XdpContext::new(ctx);
    packed(process(&ctx))
}

/// A step's result (a malformed frame's drop for `Err`) as the scalar a global function
/// returns. Hidden from the optimizer: otherwise LLVM packs the `Ok` fields on the `Err`
/// path too, where they are undefined (whatever a register held, a packet pointer once),
/// and only then picks, and the verifier refuses arithmetic on that pointer.
#[inline(always)]
fn packed(result: Result<Next, Malformed>) -> u32 {
    core::hint::black_box(result.unwrap_or(Next::Done(Outcome::drop(Verdict::DropMalformed))))
        .pack()
}

/// Leaves `translation` for the step that sends the frame on `side` (and translates its
/// quote if `quote`).
#[inline(always)]
fn forward(translation: Translation, side: Side, quote: bool, own_addr: u32) -> Next {
    let Some(scratch) = NAT_SCRATCH.get_ptr_mut(0) else {
        return Next::Done(Outcome::drop(Verdict::DropMalformed));
    };
    // SAFETY: this CPU's value; see `Scratch`.
    unsafe {
        *scratch = Scratch {
            addr: translation.addr,
            slot: translation.slot,
            own_addr,
            port: translation.port,
            _pad: 0,
        };
    }
    Next::Forward { side, quote }
}

/// Routes an inbound frame to the scratch value's address (and port, network byte order;
/// 0: kept), and sends it translated, booked under the EIP's counters in its slot.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn eipgw_nat_forward_in(ctx: *mut xdp_md) -> u32 {
    forward_side(ctx, Side::Destination)
}

/// The outbound twin of [`eipgw_nat_forward_in`], from the scratch value's address and
/// port, within the EIP's outbound cap.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn eipgw_nat_forward_out(ctx: *mut xdp_md) -> u32 {
    forward_side(ctx, Side::Source)
}

#[inline(always)]
fn forward_side(ctx: *mut xdp_md, side: Side) -> u32 {
    let ctx = XdpContext::new(ctx);
    let Some(scratch) = NAT_SCRATCH.get(0).copied() else {
        return Outcome::drop(Verdict::DropMalformed).pack();
    };
    let translation = Translation { addr: scratch.addr, port: scratch.port, slot: scratch.slot };
    let result = match parse_ipv4(&ctx) {
        Ok(frame) => route_and_send(&ctx, &frame, translation, side),
        Err(Malformed) => Err(Malformed),
    };
    packed(result)
}

#[inline(always)]
fn route_and_send(
    ctx: &XdpContext,
    frame: &Ipv4Frame,
    translation: Translation,
    side: Side,
) -> Result<Next, Malformed> {
    if side == Side::Source {
        let decision = policy::eipgw_outbound_policy(ctx.ctx, translation.slot, translation.addr);
        if decision != policy::PASSES {
            return done(Outcome::unpack(decision));
        }
    }
    if frame.ttl() <= 1 {
        return Ok(Next::Answer(RouterError::TimeExceeded));
    }
    let routed_to = match side {
        Side::Destination => translation.addr,
        Side::Source => frame.dst(),
    };
    let flow = Flow::V4 { src: frame.src(), dst: routed_to, tos: frame.tos() };
    let route = route::lookup(ctx, &flow, frame.proto(), frame.total_len);
    send(ctx, frame, route, translation, side)
}

/// The session of the private endpoint `key`: the live one, refreshed (and for TCP moved
/// along by `tcp_flags`), or a new one on `eip`. `None`: no port is free, or the table is
/// full.
#[inline(always)]
fn session(
    key: &Endpoint,
    eip: u32,
    slot: u32,
    remote: &Endpoint,
    tcp_flags: u8,
) -> Option<Translation> {
    let now = now_ns();
    let config = config();
    if let Some(session) = SNAT_SESSIONS.get_ptr_mut(key) {
        // SAFETY: a pointer into the map value; see `public_endpoint`.
        unsafe {
            if config.expired(key.proto, &*session, now) {
                // Expired but not yet swept (the agent does within a second): its port is
                // still claimed for this endpoint, so the new flow starts afresh on it.
                (*session).created_ns = now;
                (*session).state = initial_state(key.proto);
            }
            (*session).last_seen_ns = now;
            (*session).remote_addr = remote.addr;
            (*session).remote_port = remote.port;
            if key.proto == PROTO_TCP {
                (*session).state = tcp_next_state((*session).state, tcp_flags, true);
            }
            return Some(Translation {
                addr: (*session).eip,
                port: (*session).public_port,
                slot: (*session).stats_slot,
            });
        }
    }
    let claimed = eipgw_snat_claim(key.addr, key.port as u32 | (key.proto as u32) << 16, eip);
    if claimed & CLAIMED == 0 {
        return None;
    }
    let public_port = claimed as u16;
    let session = SnatSession {
        last_seen_ns: now,
        created_ns: now,
        eip,
        stats_slot: slot,
        remote_addr: remote.addr,
        public_port,
        remote_port: remote.port,
        state: initial_state(key.proto),
        _pad: [0; 7],
    };
    if SNAT_SESSIONS.insert(key, &session, BPF_NOEXIST as u64).is_err() {
        // Another CPU made this session first (then use it), or the table is full.
        let _ = SNAT_PORTS.remove(&Endpoint::new(eip, public_port, key.proto));
        let existing = SNAT_SESSIONS.get_ptr_mut(key)?;
        // SAFETY: as above.
        return unsafe {
            Some(Translation {
                addr: (*existing).eip,
                port: (*existing).public_port,
                slot: (*existing).stats_slot,
            })
        };
    }
    Some(Translation { addr: eip, port: public_port, slot })
}

/// Set in what [`eipgw_snat_claim`] returns when it claimed a port (in the low 16 bits).
const CLAIMED: u32 = 1 << 16;

/// Claims a public port of `eip` for the private endpoint (`addr`, and the port in network
/// byte order with the protocol above it in `port_proto`): [`CLAIMED`] | the port, or 0.
/// A global function of its own: the verifier walks the probe loop once, not once for
/// every path through the outbound function that reaches it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn eipgw_snat_claim(addr: u32, port_proto: u32, eip: u32) -> u32 {
    let key = Endpoint::new(addr, port_proto as u16, (port_proto >> 16) as u8);
    match claim_port(&key, eip, &config()) {
        Some(port) => CLAIMED | port as u32,
        None => 0,
    }
}

/// Claims a public port of `eip` for the private endpoint `key`: its own port if that is
/// in the range and free (RFC 4787 REQ-3's port preservation), else the first free one of
/// [`SNAT_PORT_PROBES`] tried from a random start. Network byte order.
#[inline(always)]
fn claim_port(key: &Endpoint, eip: u32, config: &SnatConfig) -> Option<u16> {
    let own = u16::from_be(key.port);
    if own >= config.port_min && own <= config.port_max && try_claim(key, eip, key.port) {
        return Some(key.port);
    }
    // SAFETY: a helper without arguments.
    let start = unsafe { bpf_get_prandom_u32() };
    for probe in 0..SNAT_PORT_PROBES {
        if probe >= config.port_count() {
            break;
        }
        let port = probe_port(config, start, probe).to_be();
        if try_claim(key, eip, port) {
            return Some(port);
        }
    }
    None
}

/// Claims one port, unless a session holds it or a DNAT port mapping of the EIP does
/// (SNAT and port mappings may share an EIP; the mapping keeps its port).
#[inline(always)]
fn try_claim(key: &Endpoint, eip: u32, port: u16) -> bool {
    let public = Endpoint::new(eip, port, key.proto);
    // SAFETY: only whether there is a value is looked at.
    if unsafe { DNAT_PORTS.get(&public) }.is_some() {
        return false;
    }
    SNAT_PORTS.insert(&public, key, BPF_NOEXIST as u64).is_ok()
}

/// Sends `frame` on along `route` with `translation` applied to `side`: the address, and
/// the port if the frame carries ports (not a later fragment) and the translation names
/// one. A frame with DF set that does not fit is answered with fragmentation needed,
/// about the packet as it arrived.
#[inline(always)]
fn send(
    ctx: &XdpContext,
    frame: &Ipv4Frame,
    route: Route,
    translation: Translation,
    side: Side,
) -> Result<Next, Malformed> {
    if let Route::TooBig { mtu, .. } = route
        && !frame.may_fragment()
    {
        let error = RouterError::FragmentationNeeded { mtu };
        return Ok(Next::Answer(error));
    }
    let direction = match side {
        Side::Destination => Direction::Inbound,
        Side::Source => Direction::Outbound,
    };
    let bytes = frame.total_len as u64;
    remember_fragment(frame, &translation);
    // The port first: every route that does not drop the frame rewrites it, and one that
    // does drops it anyway. (Carrying an `Option<Ports>` into the closure made LLVM store
    // its undefined fields, which the verifier refuses to read.)
    match (&frame.quoted, side) {
        (None, _) if translation.port == 0 => {}
        (None, Side::Destination) => {
            if let Some(ports) = ports(ctx, frame, ICMP_ECHO_REPLY)? {
                ports.set(ports.dst, translation.port);
            }
        }
        (None, Side::Source) => {
            if let Some(ports) = ports(ctx, frame, ICMP_ECHO_REQUEST)? {
                ports.set(ports.src, translation.port);
            }
        }
        // The quote: once the frame is on its way (see `run`).
        (Some(_), _) => {}
    }
    let outcome = deliver(
        ctx,
        frame,
        route,
        |frame| match side {
            Side::Destination => frame.set_dst(translation.addr),
            Side::Source => frame.set_src(translation.addr),
        },
        Verdict::Translated,
        || count_eip(translation.slot, direction, bytes),
    )?;
    Ok(Next::Done(outcome))
}

/// Translates the quote of an ICMP error the way its packet was translated: the other
/// way round from the outer packet (RFC 5508 §4.2). `quote` packs the address (low 32
/// bits), the port (network byte order; 0: kept), and above them 1 if the outer packet
/// is inbound.
///
/// A global function: inlined into the delivery, it was walked once for every kind of
/// route, and its checksum paths multiplied theirs.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn eipgw_nat_translate_quote(ctx: *mut xdp_md, quote: u64) -> u32 {
    let ctx = XdpContext::new(ctx);
    let (addr, port) = (quote as u32, (quote >> 32) as u16);
    let inbound = quote >> 48 != 0;
    match translate_quote(&ctx, addr, port, inbound) {
        Ok(()) => 0,
        Err(Malformed) => 1,
    }
}

#[inline(always)]
fn translate_quote(ctx: &XdpContext, addr: u32, port: u16, inbound: bool) -> Result<(), Malformed> {
    let frame = parse_ipv4(ctx)?;
    let Some(quoted) = &frame.quoted else {
        return Ok(());
    };
    // Inbound, the error is about a packet the EIP sent: the quote's source is the EIP's.
    // Outbound, about a packet sent to the EIP: the quote's destination.
    let (echo_type, which) =
        if inbound { (ICMP_ECHO_REQUEST, QUOTED_SRC) } else { (ICMP_ECHO_REPLY, QUOTED_DST) };
    if port != 0
        && let Some((_, _, at)) = quoted_port(ctx, quoted, echo_type, which)?
    {
        set_quoted_port(quoted, at, port);
    }
    if inbound {
        quoted.set_src(addr);
    } else {
        quoted.set_dst(addr);
    }
    Ok(())
}

/// Which port of a quoted TCP or UDP header [`quoted_port`] reads: the index of its
/// 16-bit word. (An ICMP echo's identifier stands for both.)
const QUOTED_SRC: usize = 0;
const QUOTED_DST: usize = 1;

/// The quoted packet's protocol and its port `which` (or, for an ICMP echo message of
/// `echo_type`, its identifier), with where it sits and the checksum that covers it
/// there; `None` if the quote holds no such field.
#[inline(always)]
fn quoted_port(
    ctx: &XdpContext,
    quoted: &Quoted,
    echo_type: u8,
    which: usize,
) -> Result<Option<(u8, u16, QuotedPort)>, Malformed> {
    let proto = quoted.proto();
    if quoted.is_later_fragment() || quoted.l4_at + 8 > quoted.end {
        return Ok(None);
    }
    // RFC 792: the quote holds at least 8 bytes of the L4 header; that is all this reads.
    let l4: *mut [u16; 4] = ptr_at(ctx, quoted.l4_at)?;
    let words = l4 as *mut u16;
    match proto {
        PROTO_TCP | PROTO_UDP => {
            // SAFETY: bounds-checked just above; `which` is 0 or 1, of the 4 words.
            let at = unsafe { words.add(which & 1) };
            // SAFETY: as above.
            let port = unsafe { *at };
            Ok(Some((proto, port, QuotedPort { port: at, icmp_check: None })))
        }
        PROTO_ICMP => {
            // SAFETY: as above: type and code, checksum, identifier.
            let (type_code, check, id) = unsafe { (*words, words.add(1), words.add(2)) };
            if type_code.to_ne_bytes()[0] != echo_type {
                return Ok(None);
            }
            // SAFETY: as above.
            let port = unsafe { *id };
            let check = check as *mut [u8; 2];
            Ok(Some((proto, port, QuotedPort { port: id, icmp_check: Some(check) })))
        }
        _ => Ok(None),
    }
}

/// Where a quoted port sits, and for a quoted ICMP echo, its own checksum (a TCP or UDP
/// checksum is the quote's `l4`).
#[derive(Copy, Clone)]
struct QuotedPort {
    port: *mut u16,
    icmp_check: Option<*mut [u8; 2]>,
}

/// Rewrites a quoted port, fixing the checksums that cover it (RFC 5508 §4.2).
#[inline(always)]
fn set_quoted_port(quoted: &Quoted, at: QuotedPort, new: u16) {
    // SAFETY: every pointer was bounds-checked by `parse_quoted` and `quoted_port`.
    unsafe {
        let old = *at.port;
        let (l4, l4_check) = match (at.icmp_check, quoted.l4) {
            (Some(check), _) => (QuotedL4::Tcp(u16::from_ne_bytes(*check)), Some(check)),
            (None, L4Checksum::Tcp(check)) => {
                (QuotedL4::Tcp(u16::from_ne_bytes(*check)), Some(check))
            }
            (None, L4Checksum::Udp(check)) => {
                (QuotedL4::Udp(u16::from_ne_bytes(*check)), Some(check))
            }
            (None, L4Checksum::None) => (QuotedL4::None, None),
        };
        let before = QuotedChecksums { icmp: u16::from_ne_bytes(*quoted.icmp_check), ip: 0, l4 };
        let after = checksum::quoted_port_change(before, old, new);
        *at.port = new;
        *quoted.icmp_check = after.icmp.to_ne_bytes();
        if let (Some(check), QuotedL4::Tcp(c) | QuotedL4::Udp(c)) = (l4_check, after.l4) {
            *check = c.to_ne_bytes();
        }
    }
}
