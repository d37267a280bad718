//! Authentication and encryption of the control channel, and the data-plane keys it yields.
//!
//! With a cluster secret, every control connection starts with a Noise handshake
//! (`Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`, through the `snow` crate): both sides use fresh
//! ephemeral X25519 keys (forward secrecy: recorded traffic stays safe if the secret leaks later)
//! and the secret as pre-shared key (only holders of the secret complete the handshake). All
//! control messages after it are encrypted. The handshake hash, mixed with the secret, gives the
//! two data keys of the pair (one per direction); rekeys draw fresh key material and send it over
//! the encrypted control channel.
//!
//! Every connection, encrypted or not, opens with an 8-byte preamble in clear, `WEFT`, a preamble
//! version, the mode and flags, so that a peer with a secret and one without refuse each other
//! with a clear message instead of a decoding error. A host may hold several secrets
//! ([`keyring`]); the flag [`FLAG_FINGERPRINT`] says a router names the secret it dials with (its
//! [`Fingerprint`], 4 bytes after the preambles, before the first handshake message), and a
//! responder facing a router that names none tries each accepted secret on the first message.

pub mod keyring;

pub use keyring::{Fingerprint, Keyring};

use crate::Error;
use ring::{digest, hkdf};
use std::fmt;
use vswitch::Aead;
use zeroize::Zeroize;

/// The Noise protocol used on control connections.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// The largest Noise message.
pub const NOISE_MAX: usize = 65_535;
/// Bytes of a Noise transport tag.
pub const NOISE_TAG: usize = 16;

/// Connection mode announced in the preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No secret: messages in clear.
    Plain,
    /// Noise with the cluster secret.
    Noise,
}

impl Mode {
    /// As shown in errors.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Plain => "without encryption",
            Mode::Noise => "with encryption (a secret)",
        }
    }
}

/// Preamble flag (byte 6, bit 0): this router understands fingerprints. When both preambles
/// carry it and the mode is Noise, the initiator sends its secret's 4-byte fingerprint after the
/// preambles. Routers before multi-secret files send 0 and ignore byte 6.
pub const FLAG_FINGERPRINT: u8 = 0x01;

/// The preamble each side sends first: `WEFT`, version 1, the mode, the flags, a zero byte.
pub fn preamble(mode: Mode, flags: u8) -> [u8; 8] {
    [
        b'W',
        b'E',
        b'F',
        b'T',
        1,
        match mode {
            Mode::Plain => 0,
            Mode::Noise => 1,
        },
        flags,
        0,
    ]
}

/// Reads the peer's preamble: its mode and flags (unknown flag bits are ignored, as byte 6 was
/// before it held flags).
pub fn parse_preamble(b: [u8; 8]) -> Result<(Mode, u8), Error> {
    if &b[..4] != b"WEFT" {
        return Err(Error::NotWeft(
            String::from_utf8_lossy(&b[..4]).into_owned(),
        ));
    }
    if b[4] != 1 {
        return Err(Error::Malformed(format!("preamble version {}", b[4])));
    }
    match b[5] {
        0 => Ok((Mode::Plain, b[6])),
        1 => Ok((Mode::Noise, b[6])),
        m => Err(Error::Malformed(format!("unknown connection mode {m}"))),
    }
}

/// A cluster secret, reduced to the 32-byte pre-shared key, and its public fingerprint. The key
/// is zeroed on drop.
pub struct Secret([u8; 32], Fingerprint);

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        // Not secret-dependent timing that matters: both keys are ours.
        self.0 == other.0
    }
}

impl Eq for Secret {}

impl Secret {
    /// Derives the key from one secret (surrounding whitespace ignored). Refuses secrets shorter
    /// than 16 bytes. A file of several secrets goes through [`Keyring::parse`].
    pub fn from_bytes(contents: &[u8]) -> Result<Secret, String> {
        let trimmed = contents.trim_ascii();
        if trimmed.len() < 16 {
            return Err(format!(
                "the secret has {} bytes; use at least 16 (e.g. `head -c 32 /dev/urandom | base64`)",
                trimmed.len()
            ));
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"weft cluster secret v1\0");
        ctx.update(trimmed);
        let d = ctx.finish();
        let mut k = [0u8; 32];
        k.copy_from_slice(d.as_ref());
        Ok(Secret(k, Fingerprint::of(trimmed)))
    }

    /// The public name of this secret.
    pub fn fingerprint(&self) -> Fingerprint {
        self.1
    }

    /// The pre-shared key.
    pub fn psk(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.1)
    }
}

/// A pair's data keys, from one side's point of view, and the AEAD they are for. Zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKeys {
    /// Key for what this side sends.
    pub send: [u8; 32],
    /// Key for what this side receives.
    pub recv: [u8; 32],
    /// The AEAD the keys are for: ChaCha20-Poly1305 as derived, another after
    /// [`DataKeys::bind`].
    pub aead: Aead,
}

impl DataKeys {
    /// The keys for `aead`. ChaCha20-Poly1305 keeps the keys as derived (what routers before the
    /// negotiation use, so they still agree); any other AEAD gets keys of its own, each
    /// `HKDF-SHA256(salt = "weft data key <aead name> v1", ikm = the ChaCha20-Poly1305 key)`
    /// expanded with the same label: the same bytes never key two AEADs, and the key in use
    /// reveals nothing of the ChaCha20-Poly1305 key it came from (which the pair then never
    /// uses). Meant for keys as [`derive_data_keys`] gives them; binding keys already bound to
    /// another AEAD derives from the bound ones (nothing does that).
    pub fn bind(self, aead: Aead) -> DataKeys {
        if aead == self.aead {
            return self;
        }
        let label = format!("weft data key {} v1", aead.name());
        let one = |key: &[u8; 32]| {
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, label.as_bytes()).extract(key);
            expand(&prk, label.as_bytes())
        };
        DataKeys {
            send: one(&self.send),
            recv: one(&self.recv),
            aead,
        }
    }
}

impl Drop for DataKeys {
    fn drop(&mut self) {
        self.send.zeroize();
        self.recv.zeroize();
    }
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKeys(..)")
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let infos = [info];
    if let Ok(okm) = prk.expand(&infos, Len(32)) {
        let _ = okm.fill(&mut out);
    }
    out
}

/// Derives a pair's data keys from input keying material (the handshake hash, or a rekey's fresh
/// material) and the secret, for ChaCha20-Poly1305; [`DataKeys::bind`] turns them into keys for
/// the AEAD the pair chose. The dialer of the connection is the `initiator`.
pub fn derive_data_keys(ikm: &[u8], secret: &Secret, initiator: bool) -> DataKeys {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, secret.psk());
    let prk = salt.extract(ikm);
    let i2r = expand(&prk, b"weft data i2r v1");
    let r2i = expand(&prk, b"weft data r2i v1");
    if initiator {
        DataKeys {
            send: i2r,
            recv: r2i,
            aead: Aead::ChaCha20Poly1305,
        }
    } else {
        DataKeys {
            send: r2i,
            recv: i2r,
            aead: Aead::ChaCha20Poly1305,
        }
    }
}

fn noise_err(e: snow::Error) -> Error {
    Error::Malformed(format!("noise: {e}"))
}

/// A handshake in progress.
pub struct Handshake {
    state: snow::HandshakeState,
    initiator: bool,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("initiator", &self.initiator)
            .finish()
    }
}

impl Handshake {
    /// Starts a handshake; the dialer is the initiator.
    pub fn new(secret: &Secret, initiator: bool) -> Result<Handshake, Error> {
        let params = NOISE_PARAMS.parse().map_err(noise_err)?;
        let b = snow::Builder::new(params)
            .psk(0, secret.psk())
            .map_err(noise_err)?;
        let state = if initiator {
            b.build_initiator()
        } else {
            b.build_responder()
        }
        .map_err(noise_err)?;
        Ok(Handshake { state, initiator })
    }

    /// The next handshake message to send.
    pub fn write(&mut self) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0u8; 256];
        let n = self.state.write_message(&[], &mut buf).map_err(noise_err)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Reads the peer's handshake message. A failure here means the peer does not hold our
    /// secret.
    pub fn read(&mut self, msg: &[u8]) -> Result<(), Error> {
        let mut buf = vec![0u8; 256];
        self.state
            .read_message(msg, &mut buf)
            .map(|_| ())
            .map_err(|_| {
                Error::AuthFailed(
                    "the handshake did not verify: the peer has a different secret".into(),
                )
            })
    }

    /// Starts a responder's handshake from the initiator's first message, trying each candidate
    /// secret in turn (a first message only verifies under the secret its initiator used; reading
    /// it costs hashes, no Diffie-Hellman). Returns the handshake, ready to write the answer, and
    /// the secret that verified.
    pub fn respond(
        candidates: &[std::sync::Arc<Secret>],
        m1: &[u8],
    ) -> Result<(Handshake, std::sync::Arc<Secret>), Error> {
        for s in candidates {
            let mut hs = Handshake::new(s, false)?;
            if hs.read(m1).is_ok() {
                return Ok((hs, s.clone()));
            }
        }
        Err(Error::AuthFailed(format!(
            "the handshake did not verify under any accepted secret ({}): the peer has a different secret",
            keyring::list(candidates.iter().map(|s| s.fingerprint()))
        )))
    }

    /// The connection's binding, once the handshake is complete: a hash of the Noise handshake
    /// hash under its own label, the same at both ends and new on every connection. Hellos are
    /// signed over it ([`crate::proto::Hello::sign`]).
    pub fn binding(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"weft connection binding v1\0");
        ctx.update(self.state.get_handshake_hash());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// Finishes: the transport for control messages, and the data keys.
    pub fn finish(self, secret: &Secret) -> Result<(Transport, DataKeys), Error> {
        let hash = self.state.get_handshake_hash().to_vec();
        let keys = derive_data_keys(&hash, secret, self.initiator);
        let t = self.state.into_transport_mode().map_err(noise_err)?;
        Ok((Transport(t), keys))
    }
}

/// An established encrypted control channel.
pub struct Transport(snow::TransportState);

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Transport(..)")
    }
}

impl Transport {
    /// Encrypts one message body.
    pub fn seal(&mut self, plain: &[u8]) -> Result<Vec<u8>, Error> {
        if plain.len() + NOISE_TAG > NOISE_MAX {
            return Err(Error::MessageTooLarge(plain.len()));
        }
        let mut out = vec![0u8; plain.len() + NOISE_TAG];
        let n = self.0.write_message(plain, &mut out).map_err(noise_err)?;
        out.truncate(n);
        Ok(out)
    }

    /// Decrypts one message body.
    pub fn open(&mut self, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = vec![0u8; sealed.len()];
        let n = self
            .0
            .read_message(sealed, &mut out)
            .map_err(|_| Error::AuthFailed("a control message did not verify".into()))?;
        out.truncate(n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::from_bytes(s.as_bytes()).unwrap()
    }

    type Side = (Transport, DataKeys);

    fn run(a: &Secret, b: &Secret) -> Result<(Side, Side), Error> {
        let mut i = Handshake::new(a, true)?;
        let mut r = Handshake::new(b, false)?;
        let m1 = i.write()?;
        r.read(&m1)?;
        let m2 = r.write()?;
        i.read(&m2)?;
        Ok((i.finish(a)?, r.finish(b)?))
    }

    #[test]
    fn same_secret_agrees_on_keys_and_talks() {
        let s = secret("correct horse battery staple");
        let ((mut ti, ki), (mut tr, kr)) = run(&s, &s).unwrap();
        assert_eq!(ki.send, kr.recv);
        assert_eq!(ki.recv, kr.send);
        assert_ne!(ki.send, ki.recv);
        let c = ti.seal(b"hello").unwrap();
        assert_ne!(&c[..5], b"hello");
        assert_eq!(tr.open(&c).unwrap(), b"hello");
        let mut bad = ti.seal(b"again").unwrap();
        bad[0] ^= 1;
        assert!(matches!(tr.open(&bad), Err(Error::AuthFailed(_))));
    }

    #[test]
    fn different_secrets_fail_authentication() {
        let r = run(
            &secret("correct horse battery staple"),
            &secret("another secret of 16+ bytes"),
        );
        assert!(matches!(r, Err(Error::AuthFailed(_))), "{r:?}");
    }

    #[test]
    fn fresh_keys_every_handshake() {
        let s = secret("correct horse battery staple");
        let ((_, k1), _) = run(&s, &s).unwrap();
        let ((_, k2), _) = run(&s, &s).unwrap();
        assert_ne!(
            k1.send, k2.send,
            "ephemeral keys make every session different"
        );
    }

    #[test]
    fn a_responder_finds_the_secret_the_initiator_used() {
        let (a, b) = (
            "correct horse battery staple",
            "another secret of 16+ bytes",
        );
        let k = Keyring::parse(format!("{b}\n{a}\n").as_bytes()).unwrap();
        let mut i = Handshake::new(&secret(a), true).unwrap();
        let m1 = i.write().unwrap();
        // Every accepted secret is tried; the second one verifies.
        let (mut r, used) = Handshake::respond(&k.candidates(None), &m1).unwrap();
        assert_eq!(used.fingerprint(), secret(a).fingerprint());
        i.read(&r.write().unwrap()).unwrap();
        let (_, ki) = i.finish(&secret(a)).unwrap();
        let (_, kr) = r.finish(&used).unwrap();
        assert_eq!(ki.send, kr.recv);
        // A secret that is not accepted fails on every candidate, and the error names them.
        let mut x = Handshake::new(&secret("a retired secret of 16+ bytes"), true).unwrap();
        let e = Handshake::respond(&k.candidates(None), &x.write().unwrap()).unwrap_err();
        assert!(
            e.to_string().contains(&k.fingerprints()[0].to_string()),
            "{e}"
        );
    }

    proptest::proptest! {
        #[test]
        fn preamble_parses_what_it_emits(noise: bool, flags: u8) {
            let mode = if noise { Mode::Noise } else { Mode::Plain };
            proptest::prop_assert_eq!(parse_preamble(preamble(mode, flags)).unwrap(), (mode, flags));
        }
    }

    #[test]
    fn binding_to_aes_gives_other_keys_that_both_ends_agree_on() {
        let s = secret("a cluster secret of 16+ bytes");
        let (i, r) = (
            derive_data_keys(b"hash", &s, true),
            derive_data_keys(b"hash", &s, false),
        );
        assert_eq!(i.aead, Aead::ChaCha20Poly1305);
        // ChaCha20-Poly1305 keeps the keys old routers derive.
        assert_eq!(i.clone().bind(Aead::ChaCha20Poly1305), i);
        let (ia, ra) = (
            i.clone().bind(Aead::Aes256Gcm),
            r.clone().bind(Aead::Aes256Gcm),
        );
        assert_eq!((ia.send, ia.recv), (ra.recv, ra.send));
        assert_eq!(ia.aead, Aead::Aes256Gcm);
        for k in [ia.send, ia.recv] {
            assert!(
                k != i.send && k != i.recv,
                "AES keys differ from the ChaCha20 ones"
            );
        }
        assert_ne!(ia.send, ia.recv);
    }

    #[test]
    fn preamble_round_trips_and_refuses_garbage() {
        assert_eq!(
            parse_preamble(preamble(Mode::Noise, FLAG_FINGERPRINT)).unwrap(),
            (Mode::Noise, FLAG_FINGERPRINT)
        );
        assert_eq!(
            parse_preamble(preamble(Mode::Plain, 0)).unwrap(),
            (Mode::Plain, 0)
        );
        // The bytes, as an old router sends and reads them (it ignores byte 6).
        assert_eq!(preamble(Mode::Noise, 0), *b"WEFT\x01\x01\0\0");
        assert_eq!(
            preamble(Mode::Noise, FLAG_FINGERPRINT),
            *b"WEFT\x01\x01\x01\0"
        );
        assert_eq!(
            parse_preamble(*b"WEFT\x01\x01\0\0").unwrap(),
            (Mode::Noise, 0)
        );
        assert!(matches!(
            parse_preamble(*b"GET / HT"),
            Err(Error::NotWeft(_))
        ));
        assert!(parse_preamble(*b"WEFT\x01\x07\0\0").is_err());
    }

    #[test]
    fn short_secrets_are_refused_and_debug_hides_keys() {
        assert!(Secret::from_bytes(b"  short \n").is_err());
        let s = secret("correct horse battery staple");
        assert_eq!(format!("{s:?}"), format!("Secret({})", s.fingerprint()));
        let k = derive_data_keys(b"x", &s, true);
        assert_eq!(format!("{k:?}"), "DataKeys(..)");
    }
}
