//! What goes over a control connection before and around the messages: the preamble, the Noise
//! handshake when there is a secret, and the length-prefixed framing, in clear or sealed.

use super::Shared;
use crate::proto::{self, Message};
use crate::secure::{self, keyring, DataKeys, Fingerprint, Handshake, Mode, Secret, Transport};
use crate::Error;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;

/// How messages are framed on one connection: length prefix, then JSON in clear or sealed by
/// the Noise transport.
#[derive(Clone)]
pub(super) enum Codec {
    Plain,
    Noise(Arc<Mutex<Transport>>),
}

impl Codec {
    pub(super) fn encode(&self, msg: &Message) -> Result<Vec<u8>, Error> {
        match self {
            Codec::Plain => Ok(proto::encode(msg)),
            Codec::Noise(t) => {
                let json = serde_json::to_vec(msg).map_err(|e| Error::Malformed(e.to_string()))?;
                let sealed = t.lock().unwrap_or_else(|p| p.into_inner()).seal(&json)?;
                Ok(frame(&sealed))
            }
        }
    }

    pub(super) async fn read(&self, rd: &mut OwnedReadHalf) -> Result<Message, Error> {
        match self {
            Codec::Plain => {
                let body = read_frame(rd, proto::MAX_MESSAGE_LEN).await?;
                proto::decode_body(&body)
            }
            Codec::Noise(t) => {
                let sealed = read_frame(rd, secure::NOISE_MAX).await?;
                let json = t.lock().unwrap_or_else(|p| p.into_inner()).open(&sealed)?;
                proto::decode_body(&json)
            }
        }
    }
}

pub(super) fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub(super) async fn read_frame(rd: &mut OwnedReadHalf, max: usize) -> Result<Vec<u8>, Error> {
    let mut prefix = [0u8; 4];
    rd.read_exact(&mut prefix).await?;
    let len = proto::decode_len(prefix)?;
    if len > max {
        return Err(Error::MessageTooLarge(len));
    }
    let mut body = vec![0u8; len];
    rd.read_exact(&mut body).await?;
    Ok(body)
}

/// The preamble and, with a secret, the Noise handshake: returns the message codec, and the data
/// keys with the secret the handshake used. The dialer uses our preferred secret and names its
/// fingerprint when the peer understands fingerprints; the listener picks the accepted secret of
/// that fingerprint, or tries every accepted one for a peer that names none.
pub(super) async fn secure_channel(
    shared: &Shared,
    rd: &mut OwnedReadHalf,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    outbound: bool,
) -> Result<(Codec, Option<(DataKeys, Arc<Secret>, [u8; 32])>), Error> {
    let keyring = shared.keyring();
    let (mode, flags) = match keyring {
        Some(_) => (Mode::Noise, secure::FLAG_FINGERPRINT),
        None => (Mode::Plain, 0),
    };
    wr.write_all(&secure::preamble(mode, flags)).await?;
    let mut pre = [0u8; 8];
    rd.read_exact(&mut pre).await?;
    let (theirs, their_flags) = secure::parse_preamble(pre)?;
    if theirs != mode {
        return Err(Error::EncryptionMismatch {
            ours: mode.describe(),
            theirs: theirs.describe(),
        });
    }
    let Some(keyring) = keyring else {
        return Ok((Codec::Plain, None));
    };
    let named = their_flags & secure::FLAG_FINGERPRINT != 0;
    let (hs, secret) = if outbound {
        let secret = keyring.preferred().clone();
        let fp = secret.fingerprint();
        let mut hs = Handshake::new(&secret, true)?;
        let mut first = Vec::new();
        if named {
            first.extend_from_slice(&fp.0);
        }
        first.extend_from_slice(&frame(&hs.write()?));
        wr.write_all(&first).await?;
        let m2 = read_frame(rd, 1024).await.map_err(|_| {
            Error::AuthFailed(format!(
                "the peer closed the connection during the handshake: it does not accept our secret (fingerprint {fp})"
            ))
        })?;
        hs.read(&m2)?;
        (hs, secret)
    } else {
        let offered = if named {
            let mut fp = [0u8; 4];
            rd.read_exact(&mut fp).await?;
            Some(Fingerprint(fp))
        } else {
            None
        };
        let m1 = read_frame(rd, 1024).await?;
        let candidates = keyring.candidates(offered);
        if let (Some(fp), true) = (offered, candidates.is_empty()) {
            return Err(refused_secret(shared, &keyring, fp));
        }
        let (mut hs, secret) = Handshake::respond(&candidates, &m1)?;
        wr.write_all(&frame(&hs.write()?)).await?;
        (hs, secret)
    };
    let binding = hs.binding();
    let (t, keys) = hs.finish(&secret)?;
    Ok((
        Codec::Noise(Arc::new(Mutex::new(t))),
        Some((keys, secret, binding)),
    ))
}

/// Why a peer that named a secret we do not accept is refused: retired from our file during this
/// run, or never ours.
fn refused_secret(shared: &Shared, keyring: &secure::Keyring, fp: Fingerprint) -> Error {
    let accepted = keyring::list(keyring.fingerprints());
    let retired = shared
        .retired
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&fp);
    Error::AuthFailed(if retired {
        format!("the peer offered a retired secret (fingerprint {fp}), removed from this host's secret file; accepted: {accepted}")
    } else {
        format!("the peer offered a secret this host does not accept (fingerprint {fp}); accepted: {accepted}")
    })
}
