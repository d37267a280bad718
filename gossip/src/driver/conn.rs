//! Control connections: the accept loop (with its rate and connection limits) and the task that
//! runs one connection, inbound or outbound: secure channel, hello exchange, the sleeve's AEAD
//! ([`crate::cipher`]), admission by [`crate::mesh`], then heartbeats and messages until it ends.

use super::codec::{secure_channel, Codec};
use super::ipam::dispatch_ipam;
use super::{dispatch, ConnRecord, Event, PeerInfo, Shared, TargetState};
use crate::cipher;
use crate::mesh::Admitted;
use crate::proto::{self, Message};
use crate::topology::ConnEntry;
use crate::Error;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut tokens = shared.cfg.accept_burst;
    let mut last = Instant::now();
    let mut refused_logged: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shared.shutdown.notified() => return,
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    // On a listener bound to `[::]` (both families), an IPv4 peer arrives as
                    // ::ffff:a.b.c.d: it is known by its IPv4 address, as when we dial it.
                    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                    let now = Instant::now();
                    tokens = (tokens + now.duration_since(last).as_secs_f64() * shared.cfg.accept_rate)
                        .min(shared.cfg.accept_burst);
                    last = now;
                    let open = shared.open.load(Ordering::Relaxed);
                    if tokens < 1.0 || open >= shared.cfg.max_connections {
                        shared.refused.fetch_add(1, Ordering::Relaxed);
                        if refused_logged.is_none_or(|t| now.duration_since(t) > Duration::from_secs(10)) {
                            tracing::warn!(%addr, open, "refusing inbound connections: accept rate or connection limit reached");
                            refused_logged = Some(now);
                        }
                        drop(stream);
                        continue;
                    }
                    tokens -= 1.0;
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(e) = run_conn(&shared, stream, addr, false).await.into_result() {
                            // Logged once per address and reason, not once per attempt.
                            let reason = e.to_string();
                            let mut refused = shared
                                .refused_peers
                                .lock()
                                .unwrap_or_else(|p| p.into_inner());
                            let entry = refused
                                .entry(addr.ip())
                                .or_insert_with(|| (String::new(), 0, Instant::now()));
                            if entry.0 != reason {
                                tracing::warn!(%addr, "inbound connection refused: {reason}");
                                entry.0 = reason;
                            }
                            entry.1 += 1;
                            entry.2 = Instant::now();
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// How a connection ended.
pub(super) enum Outcome {
    /// It failed before the handshake completed.
    Refused(Error),
    /// It was established, then ended for this reason.
    Ended(Error),
    /// It was established, then replaced by a newer connection to the same peer (a re-handshake
    /// on the preferred secret, a redial).
    Replaced(crate::PeerName),
}

impl Outcome {
    fn into_result(self) -> Result<(), Error> {
        match self {
            Outcome::Refused(e) => Err(e),
            Outcome::Ended(_) | Outcome::Replaced(_) => Ok(()),
        }
    }
}

/// Counts a connection as open for as long as it lives.
pub(super) struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// With a secret, the hello must bind the peer's name to its host key over this connection:
/// a signature that verifies for the connection's binding (`initiator`: the peer dialled), and a
/// key that is the name's (derived from it, or the one already bound to it; an older name seen
/// first is bound now). An unsigned hello is from a router of an older version: refused when
/// the name has a key or signatures are required. The binding is shared with the record checks.
fn check_hello_key(
    shared: &Shared,
    theirs: &proto::Hello,
    binding: &[u8; 32],
    initiator: bool,
) -> Result<(), Error> {
    let name = theirs.peer_name();
    let mut inner = shared.lock();
    let Some(key) = theirs.key else {
        if inner.core.requires_signed() {
            return Err(Error::UnsignedHello);
        }
        if inner.core.key_of(name).is_some() {
            return Err(Error::WrongHostKey {
                name,
                why: "its hello is unsigned",
            });
        }
        return Ok(());
    };
    if !theirs.signature_verifies(binding, initiator) {
        return Err(Error::BadHelloSignature);
    }
    inner
        .core
        .bind_connection_key(name, key)
        .map_err(|_| Error::WrongHostKey {
            name,
            why: "its hello is signed with another key",
        })?;
    if let Some(ipam) = inner.ipam.as_mut() {
        ipam.bind_connection_key(name, key);
    }
    Ok(())
}

/// The wall clock in Unix milliseconds (0 before 1970).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(super) async fn run_conn(
    shared: &Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    outbound: bool,
) -> Outcome {
    shared.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(&shared.open);
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut ours = shared.cfg.hello();
    let handshake = async {
        let (codec, keyed) = secure_channel(shared, &mut rd, &mut wr, outbound).await?;
        if let Some(k) = &shared.cfg.host_key {
            ours.sign(k, keyed.as_ref().map(|(_, _, b)| b), outbound);
        }
        ours.time_ms = Some(unix_ms());
        wr.write_all(&codec.encode(&Message::Hello(ours.clone()))?)
            .await?;
        match codec.read(&mut rd).await? {
            Message::Hello(h) => Ok((h, codec, keyed)),
            Message::Goodbye { reason } => Err(Error::Goodbye(reason)),
            _ => Err(Error::Protocol("expected hello")),
        }
    };
    let (theirs, codec, keyed) =
        match tokio::time::timeout(shared.cfg.handshake_timeout, handshake).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Outcome::Refused(e),
            Err(_) => return Outcome::Refused(Error::Closed("handshake timed out".into())),
        };
    let received_ms = unix_ms();
    let version = match proto::negotiate(&ours, &theirs) {
        Ok(v) => v,
        Err(e) => return refuse(&mut wr, &codec, e).await,
    };
    if let Err(e) = ours.check_ipam(&theirs) {
        return refuse(&mut wr, &codec, e).await;
    }
    let name = theirs.peer_name();
    let (keys, secret, binding) = match keyed {
        Some((k, s, b)) => (Some(k), Some(s), Some(b)),
        None => (None, None, None),
    };
    if let Some(b) = binding {
        if let Err(e) = check_hello_key(shared, &theirs, &b, !outbound) {
            return refuse(&mut wr, &codec, e).await;
        }
    }
    // With a secret, the sleeve's AEAD for this pair, chosen from the two hellos as sent (both
    // ends compute the same), and the data keys bound to it. Without one there is nothing to seal.
    let keys = match keys {
        Some(k) => match cipher::choose(
            &cipher::parse_offer(&ours.ciphers),
            &cipher::parse_offer(&theirs.ciphers),
        ) {
            Ok(aead) => Some(k.bind(aead)),
            Err(e) => return refuse(&mut wr, &codec, e).await,
        },
        None => None,
    };
    // `conn` is set when the connection is admitted and gets its id.
    let mut info = PeerInfo {
        name,
        uid: theirs.uid,
        nickname: theirs.nickname.clone(),
        tcp_addr: addr,
        udp_addr: SocketAddr::new(addr.ip(), theirs.udp_port),
        pod_mtu: theirs.pod_mtu,
        version,
        outbound,
        conn: 0,
        keys,
        secret,
        clock_offset_ms: theirs.time_ms.map(|t| t as i64 - received_ms as i64),
    };
    let close = Arc::new(Notify::new());
    let replaced_by_newer = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel::<Message>(1024);
    // Where other peers can reach this one: the address we dialled, or its address as seen
    // with the port it listens on.
    let dial_addr = if outbound {
        addr
    } else {
        SocketAddr::new(addr.ip(), theirs.udp_port)
    };
    let admitted = (|| {
        let mut inner = shared.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        info.conn = id;
        // A connection that replaces a live one to the same run of the peer (a re-handshake, a
        // redial) keeps the data path's state: it was usable a moment ago.
        let mut usable = false;
        match inner.mesh.admit(id, &theirs, outbound) {
            Ok(Admitted::New) => {}
            Ok(Admitted::Replaces { old }) => {
                if let Some(c) = inner.conns.get(&old) {
                    c.replaced.store(true, Ordering::Relaxed);
                    c.close.notify_one();
                    if c.peer.as_ref().is_some_and(|p| p.uid == info.uid) {
                        usable = inner.core.connections().any(|e| e.peer == name && e.usable);
                    }
                }
            }
            Err(e) => return Err(e),
        }
        inner.conns.insert(
            id,
            ConnRecord {
                peer: Some(info.clone()),
                close: close.clone(),
                replaced: replaced_by_newer.clone(),
                since: Instant::now(),
                tx: tx.clone(),
                rehandshake_at: None,
            },
        );
        if outbound {
            if let Some(t) = inner.targets.get_mut(&addr) {
                t.state = TargetState::Established {
                    peer: name.to_string(),
                };
                t.failures = 0;
                t.next_at = None;
            }
        }
        let _ = shared.events.send(Event::Up(info.clone()));
        let entry = ConnEntry {
            peer: name,
            addr: dial_addr,
            usable,
        };
        let out = inner.core.connected(Instant::now(), name, entry);
        dispatch(shared, &mut inner, out);
        if let Some(out) = inner
            .ipam
            .as_mut()
            .map(|i| i.connected(Instant::now(), name))
        {
            dispatch_ipam(shared, &mut inner, out);
        }
        Ok(id)
    })();
    let id = match admitted {
        Ok(id) => id,
        Err(e) => return refuse(&mut wr, &codec, e).await,
    };
    let secret = info.secret.as_ref().map(|s| s.fingerprint().to_string());
    tracing::info!(peer = %name, nickname = %info.nickname, %addr, outbound, secret, "connected");
    let conn_secret = info.secret.clone();

    // Writes go through a task of their own so that a heartbeat never interrupts a read.
    let heartbeat = shared.cfg.heartbeat;
    let wcodec = codec.clone();
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(heartbeat);
        loop {
            let msg = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => break },
                _ = tick.tick() => Message::Heartbeat,
            };
            let last = matches!(msg, Message::Goodbye { .. });
            let Ok(bytes) = wcodec.encode(&msg) else {
                break;
            };
            if wr.write_all(&bytes).await.is_err() || last {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let reason = loop {
        let msg = tokio::select! {
            _ = close.notified() => {
                let reason = if replaced_by_newer.load(Ordering::Relaxed) {
                    proto::GOODBYE_REPLACED
                } else {
                    "closing"
                };
                let _ = tx.send(Message::Goodbye { reason: reason.into() }).await;
                break Error::Closed("closed locally".into());
            }
            m = tokio::time::timeout(shared.cfg.dead_after, codec.read(&mut rd)) => m,
        };
        match msg {
            Err(_) => {
                break Error::Closed(format!(
                    "no heartbeat for {} ms",
                    shared.cfg.dead_after.as_millis()
                ))
            }
            Ok(Err(Error::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break Error::Closed("connection closed by peer".into())
            }
            Ok(Err(e)) => {
                let _ = tx
                    .send(Message::Goodbye {
                        reason: e.to_string(),
                    })
                    .await;
                break e;
            }
            Ok(Ok(Message::Heartbeat)) => {}
            Ok(Ok(Message::Gossip(g))) => {
                let mut inner = shared.lock();
                let out = inner.core.on_message(Instant::now(), name, g);
                dispatch(shared, &mut inner, out);
            }
            Ok(Ok(Message::Ipam(m))) => {
                let mut inner = shared.lock();
                if let Some(out) = inner
                    .ipam
                    .as_mut()
                    .map(|i| i.on_message(Instant::now(), name, m))
                {
                    dispatch_ipam(shared, &mut inner, out);
                }
            }
            Ok(Ok(Message::Goodbye { reason })) => break Error::Goodbye(reason),
            Ok(Ok(
                msg @ (Message::Rekey { .. }
                | Message::RekeyAck { .. }
                | Message::Handover { .. }
                | Message::HandoverAck { .. }
                | Message::Probe { .. }
                | Message::TraceArm(_)
                | Message::TraceArmed { .. }
                | Message::TraceReport(_)),
            )) => {
                let _ = shared.events.send(Event::Control {
                    from: name,
                    msg,
                    conn: id,
                    secret: conn_secret.clone(),
                });
            }
            Ok(Ok(Message::Hello(_))) => {
                let e = Error::Protocol("second hello");
                let _ = tx
                    .send(Message::Goodbye {
                        reason: e.to_string(),
                    })
                    .await;
                break e;
            }
        }
    };
    drop(tx);
    if matches!(&reason, Error::Goodbye(r) if r == proto::GOODBYE_REPLACED) {
        await_replacement(shared, name, id).await;
    }
    let replaced = {
        let mut inner = shared.lock();
        // Dropping the record drops the last sender: the writer flushes and ends.
        inner.conns.remove(&id);
        let current = inner.mesh.remove(name, id);
        if current {
            tracing::info!(peer = %name, "disconnected: {reason}");
            let _ = shared.events.send(Event::Down {
                name,
                reason: reason.to_string(),
            });
            let out = inner.core.disconnected(Instant::now(), name);
            dispatch(shared, &mut inner, out);
            if let Some(out) = inner
                .ipam
                .as_mut()
                .map(|i| i.disconnected(Instant::now(), name))
            {
                dispatch_ipam(shared, &mut inner, out);
            }
        }
        !current
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), writer).await;
    if replaced {
        tracing::debug!(peer = %name, "connection replaced by a newer one");
        return Outcome::Replaced(name);
    }
    Outcome::Ended(reason)
}

/// How long a connection the peer closed as replaced waits for the newer connection to be
/// admitted here before the peer is reported down.
const REPLACEMENT_WAIT: Duration = Duration::from_secs(2);

/// Waits until connection `id` is no longer `peer`'s current one (the newer connection the peer
/// says replaced it was admitted here too), or [`REPLACEMENT_WAIT`]. Both ends of a
/// re-handshake then see a replacement, never the peer down and up again: the peer's data
/// session and routes stay in place while the two connections cross.
async fn await_replacement(shared: &Arc<Shared>, peer: crate::PeerName, id: crate::mesh::ConnId) {
    let deadline = Instant::now() + REPLACEMENT_WAIT;
    while Instant::now() < deadline {
        if shared.lock().mesh.get(peer).is_none_or(|c| c.id != id) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tracing::debug!(%peer, "the connection said to replace this one did not come");
}

pub(super) async fn refuse(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    codec: &Codec,
    e: Error,
) -> Outcome {
    if let Ok(bytes) = codec.encode(&Message::Goodbye {
        reason: e.to_string(),
    }) {
        let _ = wr.write_all(&bytes).await;
    }
    let _ = wr.shutdown().await;
    Outcome::Refused(e)
}
