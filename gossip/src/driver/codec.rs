//! What goes over a control connection before and around the messages: the preamble, the Noise
//! handshake when there is a secret, and the length-prefixed framing, in clear or sealed.

use super::Shared;
use crate::proto::{self, Message};
use crate::secure::{self, DataKeys, Handshake, Mode, Transport};
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

/// The preamble and, with a secret, the Noise handshake: returns the message codec and the data
/// keys.
pub(super) async fn secure_channel(
    shared: &Shared,
    rd: &mut OwnedReadHalf,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    outbound: bool,
) -> Result<(Codec, Option<DataKeys>), Error> {
    let mode = if shared.cfg.secret.is_some() {
        Mode::Noise
    } else {
        Mode::Plain
    };
    wr.write_all(&secure::preamble(mode)).await?;
    let mut pre = [0u8; 8];
    rd.read_exact(&mut pre).await?;
    let theirs = secure::parse_preamble(pre)?;
    if theirs != mode {
        return Err(Error::EncryptionMismatch {
            ours: mode.describe(),
            theirs: theirs.describe(),
        });
    }
    let Some(secret) = &shared.cfg.secret else {
        return Ok((Codec::Plain, None));
    };
    let mut hs = Handshake::new(secret, outbound)?;
    let closed = |_| {
        Error::AuthFailed(
            "the peer closed the connection during the handshake: it has a different secret".into(),
        )
    };
    if outbound {
        wr.write_all(&frame(&hs.write()?)).await?;
        let m2 = read_frame(rd, 1024).await.map_err(closed)?;
        hs.read(&m2)?;
    } else {
        let m1 = read_frame(rd, 1024).await?;
        hs.read(&m1)?;
        wr.write_all(&frame(&hs.write()?)).await?;
    }
    let (t, keys) = hs.finish(secret)?;
    Ok((Codec::Noise(Arc::new(Mutex::new(t))), Some(keys)))
}
