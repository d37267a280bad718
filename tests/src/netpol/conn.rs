//! Traffic that runs in the background while a test changes things: [`Chatter`], a long-lived
//! TCP connection to a pod's echo port exchanging one byte every [`CHAT_INTERVAL`], and
//! [`Hammer`], a stream of fresh connection attempts from one namespace, counting those that get
//! through. Each runs on a dedicated OS thread that enters the source namespace and stays there.

use super::probe::{probe, Outcome, Probe};
use super::serve::ECHO_PORT;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use weft_lab::in_netns;

/// How often a [`Chatter`] exchanges a byte.
pub const CHAT_INTERVAL: Duration = Duration::from_millis(100);

/// What a [`Chatter`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatStats {
    /// Bytes sent and echoed back.
    pub exchanged: u64,
    /// The longest wait for an echo.
    pub longest_wait: Duration,
    /// How the connection failed, if it did (reset, closed, wrong byte, no echo within the
    /// patience).
    pub error: Option<String>,
}

/// A long-lived connection to `to`'s echo port; see the module docs.
#[derive(Debug)]
pub struct Chatter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ChatStats>>,
    exchanged: Arc<AtomicU64>,
}

impl Chatter {
    /// Connects from namespace `ns` to `to`:[`ECHO_PORT`] (within 5 s) and starts exchanging; a
    /// missing echo is an error once `patience` has passed.
    pub fn start(ns: &str, to: Ipv4Addr, patience: Duration) -> anyhow::Result<Chatter> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let count = Arc::new(AtomicU64::new(0));
        let count2 = count.clone();
        let (ns, stop2) = (ns.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || {
            in_netns(&ns.clone(), move || {
                let addr = SocketAddr::from((to, ECHO_PORT));
                match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        chat(s, &stop2, patience, &count2)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("connecting to {addr} from {ns}: {e}")));
                        ChatStats::default()
                    }
                }
            })
            .unwrap_or_else(|e| ChatStats {
                error: Some(format!("{e:#}")),
                ..ChatStats::default()
            })
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Chatter {
                stop,
                thread: Some(thread),
                exchanged: count,
            }),
            Ok(Err(e)) => Err(anyhow::anyhow!(e)),
            Err(_) => Err(anyhow::anyhow!("the chatter did not start")),
        }
    }

    /// Bytes exchanged so far.
    pub fn exchanged(&self) -> u64 {
        self.exchanged.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more bytes have been exchanged (within `timeout`).
    pub fn wait_more(&self, n: u64, timeout: Duration) -> bool {
        let target = self.exchanged() + n;
        weft_lab::poll_until(timeout, Duration::from_millis(20), || {
            (self.exchanged() >= target).then_some(())
        })
        .is_some()
    }

    /// Stops and returns what it saw (also whether the connection is still alive: no error).
    pub fn stop(mut self) -> ChatStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("the chatter panicked"))
            .unwrap_or_default()
    }
}

impl Drop for Chatter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn chat(mut s: TcpStream, stop: &AtomicBool, patience: Duration, count: &AtomicU64) -> ChatStats {
    let mut st = ChatStats::default();
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = s.set_nodelay(true);
    let mut b: u8 = 0;
    while !stop.load(Ordering::Relaxed) {
        b = b.wrapping_add(1);
        if let Err(e) = s.write_all(&[b]) {
            st.error = Some(format!("write: {e}"));
            return st;
        }
        let sent = Instant::now();
        let mut got = [0u8; 1];
        loop {
            match s.read(&mut got) {
                Ok(0) => {
                    st.error = Some("closed by the peer".into());
                    return st;
                }
                Ok(_) if got[0] == b => break,
                Ok(_) => {
                    st.error = Some(format!("echoed {} instead of {b}", got[0]));
                    return st;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if sent.elapsed() > patience {
                        st.error = Some(format!("no echo within {patience:?}"));
                        return st;
                    }
                }
                Err(e) => {
                    st.error = Some(format!("read: {e}"));
                    return st;
                }
            }
        }
        st.longest_wait = st.longest_wait.max(sent.elapsed());
        st.exchanged += 1;
        count.store(st.exchanged, Ordering::Relaxed);
        std::thread::sleep(CHAT_INTERVAL);
    }
    st
}

/// What a [`Hammer`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HammerStats {
    /// Connection attempts made.
    pub attempts: u64,
    /// Those that reached the destination.
    pub successes: u64,
    /// When the first success came, after the start.
    pub first_success: Option<Duration>,
    /// Answers that were not the destination's.
    pub wrong: u64,
    /// The slowest attempt.
    pub slowest: Duration,
    /// From the start to the stop.
    pub ran: Duration,
}

/// Fresh probes, one after the other, from one namespace; see the module docs.
#[derive(Debug)]
pub struct Hammer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<HammerStats>>,
}

impl Hammer {
    /// Starts probing `p` from `ns` with `timeout` per attempt, `pause` between attempts.
    pub fn start(ns: &str, p: Probe, timeout: Duration, pause: Duration) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, stop2) = (ns.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || {
            in_netns(&ns, move || {
                let start = Instant::now();
                let mut st = HammerStats::default();
                while !stop2.load(Ordering::Relaxed) {
                    st.attempts += 1;
                    let t = Instant::now();
                    let out = probe(&p, timeout);
                    st.slowest = st.slowest.max(t.elapsed());
                    match out {
                        Outcome::Reached(_) => {
                            st.successes += 1;
                            st.first_success.get_or_insert(start.elapsed());
                        }
                        Outcome::Wrong(_) => st.wrong += 1,
                        Outcome::Denied(_) => {}
                    }
                    std::thread::sleep(pause);
                }
                st.ran = start.elapsed();
                st
            })
            .unwrap_or_default()
        });
        Hammer {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns the counts.
    pub fn stop(mut self) -> HammerStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("the hammer panicked"))
            .unwrap_or_default()
    }
}

impl Drop for Hammer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
