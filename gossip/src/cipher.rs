//! Which AEAD a neighbour pair seals its sleeve datagrams with: pure, and the same answer at both
//! ends.
//!
//! Each host offers a list of AEADs in its order of preference ([`offer`]), from its `--cipher`
//! setting and whether its CPU has AES instructions; the list travels in its hello
//! ([`crate::proto::Hello::ciphers`]). A hello without the list is from a router older than the
//! negotiation, which seals with ChaCha20-Poly1305 only. [`choose`] then picks, from the two
//! lists alone and symmetrically (swapping them gives the same answer, so the two ends agree
//! without another message):
//!
//! 1. the AEADs both offer; none is an error that names both lists (a pin the peer cannot
//!    meet: [`Error::NoCommonCipher`]);
//! 2. if both put the same one of those first, that one (two hosts with AES hardware:
//!    AES-256-GCM);
//! 3. otherwise the first of the fallback order ([`Aead::ALL`]: ChaCha20-Poly1305) that both
//!    offer (a host with AES hardware and one without: ChaCha20-Poly1305, fast on both).
//!
//! The data keys are then bound to the choice ([`crate::secure::DataKeys::bind`]), so that the
//! same key bytes never serve two AEADs. `docs/decisions.md` and `docs/security.md` explain why a
//! man in the middle cannot steer the choice.

use crate::Error;
use vswitch::Aead;

/// The `--cipher` setting: `auto`, or one AEAD pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CipherSetting {
    /// AES-256-GCM with peers that also have AES hardware, ChaCha20-Poly1305 otherwise.
    #[default]
    Auto,
    /// This AEAD with every peer; a peer that cannot use it is refused.
    Pinned(Aead),
}

impl CipherSetting {
    /// `auto`, `aes-256-gcm` or `chacha20-poly1305`.
    pub fn name(self) -> &'static str {
        match self {
            CipherSetting::Auto => "auto",
            CipherSetting::Pinned(a) => a.name(),
        }
    }
}

impl std::str::FromStr for CipherSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(CipherSetting::Auto);
        }
        Aead::from_name(s)
            .map(CipherSetting::Pinned)
            .ok_or_else(|| {
                format!("unknown cipher {s:?}: expected auto, aes-256-gcm or chacha20-poly1305")
            })
    }
}

impl std::fmt::Display for CipherSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a host offers, in its order of preference: a pin offers that AEAD alone; `auto` offers
/// both, AES-256-GCM first when the CPU has AES instructions (`hardware_aes`), ChaCha20-Poly1305
/// first otherwise. A host without AES hardware still offers AES-256-GCM second (`ring` has a
/// constant-time software path), so that a peer pinned to it can connect.
pub fn offer(setting: CipherSetting, hardware_aes: bool) -> Vec<Aead> {
    match setting {
        CipherSetting::Pinned(a) => vec![a],
        CipherSetting::Auto if hardware_aes => vec![Aead::Aes256Gcm, Aead::ChaCha20Poly1305],
        CipherSetting::Auto => vec![Aead::ChaCha20Poly1305, Aead::Aes256Gcm],
    }
}

/// The AEADs of a hello's list of names, in its order: unknown names (from a newer router) are
/// skipped, and an empty list (a router older than the negotiation) is ChaCha20-Poly1305 alone.
pub fn parse_offer(names: &[String]) -> Vec<Aead> {
    let mut out: Vec<Aead> = Vec::new();
    for a in names.iter().filter_map(|n| Aead::from_name(n)) {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if names.is_empty() {
        out.push(Aead::ChaCha20Poly1305);
    }
    out
}

/// The names of an offer, for the hello.
pub fn offer_names(offer: &[Aead]) -> Vec<String> {
    offer.iter().map(|a| a.name().to_string()).collect()
}

/// The AEAD of a pair, from the two offers (see the module documentation). Symmetric:
/// `choose(a, b) == choose(b, a)`.
pub fn choose(ours: &[Aead], theirs: &[Aead]) -> Result<Aead, Error> {
    let common = |a: &Aead| ours.contains(a) && theirs.contains(a);
    let first_ours = ours.iter().copied().find(common);
    let first_theirs = theirs.iter().copied().find(common);
    match (first_ours, first_theirs) {
        (Some(a), Some(b)) if a == b => Ok(a),
        (Some(_), Some(_)) => Aead::ALL
            .into_iter()
            .find(common)
            .ok_or_else(|| no_common(ours, theirs)),
        _ => Err(no_common(ours, theirs)),
    }
}

fn no_common(ours: &[Aead], theirs: &[Aead]) -> Error {
    let list = |o: &[Aead]| {
        if o.is_empty() {
            "nothing".to_string()
        } else {
            offer_names(o).join(", ")
        }
    };
    Error::NoCommonCipher {
        ours: list(ours),
        theirs: list(theirs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Aead::{Aes256Gcm as Aes, ChaCha20Poly1305 as ChaCha};

    const AUTO: CipherSetting = CipherSetting::Auto;
    const PIN_AES: CipherSetting = CipherSetting::Pinned(Aes);
    const PIN_CHACHA: CipherSetting = CipherSetting::Pinned(ChaCha);

    fn pick(a: (CipherSetting, bool), b: (CipherSetting, bool)) -> Result<Aead, Error> {
        choose(&offer(a.0, a.1), &offer(b.0, b.1))
    }

    #[test]
    fn auto_picks_aes_only_when_both_have_the_hardware() {
        assert_eq!(pick((AUTO, true), (AUTO, true)).unwrap(), Aes);
        assert_eq!(pick((AUTO, true), (AUTO, false)).unwrap(), ChaCha);
        assert_eq!(pick((AUTO, false), (AUTO, true)).unwrap(), ChaCha);
        assert_eq!(pick((AUTO, false), (AUTO, false)).unwrap(), ChaCha);
    }

    #[test]
    fn a_pin_wins_over_auto_on_either_hardware() {
        for hw in [true, false] {
            for other_hw in [true, false] {
                let a = pick((PIN_AES, hw), (AUTO, other_hw)).unwrap();
                let c = pick((PIN_CHACHA, hw), (AUTO, other_hw)).unwrap();
                assert_eq!((a, c), (Aes, ChaCha), "hardware {hw} / {other_hw}");
            }
        }
        assert_eq!(pick((PIN_AES, false), (PIN_AES, false)).unwrap(), Aes);
    }

    #[test]
    fn conflicting_pins_are_refused_naming_both() {
        let e = pick((PIN_AES, true), (PIN_CHACHA, true)).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("aes-256-gcm") && text.contains("chacha20-poly1305"),
            "{text}"
        );
    }

    #[test]
    fn old_peers_get_chacha_and_refuse_an_aes_pin() {
        let old = parse_offer(&[]);
        assert_eq!(old, vec![ChaCha]);
        assert_eq!(choose(&offer(AUTO, true), &old).unwrap(), ChaCha);
        assert_eq!(choose(&offer(PIN_CHACHA, true), &old).unwrap(), ChaCha);
        assert!(matches!(
            choose(&offer(PIN_AES, true), &old),
            Err(Error::NoCommonCipher { .. })
        ));
    }

    #[test]
    fn unknown_names_are_skipped_and_duplicates_dropped() {
        let names: Vec<String> = [
            "xchacha-future",
            "aes-256-gcm",
            "aes-256-gcm",
            "chacha20-poly1305",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(parse_offer(&names), vec![Aes, ChaCha]);
        // A list of only unknown names offers nothing we can use.
        let e = choose(&offer(AUTO, true), &parse_offer(&["rot13".into()])).unwrap_err();
        assert!(e.to_string().contains("nothing"), "{e}");
    }

    #[test]
    fn settings_parse_and_print() {
        for s in [AUTO, PIN_AES, PIN_CHACHA] {
            assert_eq!(s.name().parse::<CipherSetting>().unwrap(), s);
        }
        assert!("aes".parse::<CipherSetting>().is_err());
        assert_eq!(
            parse_offer(&offer_names(&offer(AUTO, true))),
            vec![Aes, ChaCha]
        );
    }

    fn any_offer() -> impl Strategy<Value = Vec<Aead>> {
        prop_oneof![
            Just(vec![]),
            Just(vec![ChaCha]),
            Just(vec![Aes]),
            Just(vec![Aes, ChaCha]),
            Just(vec![ChaCha, Aes]),
        ]
    }

    proptest! {
        /// Both ends reach the same answer, one both offer; or both fail.
        #[test]
        fn choice_is_symmetric_and_common(a in any_offer(), b in any_offer()) {
            match (choose(&a, &b), choose(&b, &a)) {
                (Ok(x), Ok(y)) => {
                    prop_assert_eq!(x, y);
                    prop_assert!(a.contains(&x) && b.contains(&x));
                }
                (Err(_), Err(_)) => prop_assert!(!a.iter().any(|x| b.contains(x))),
                (x, y) => prop_assert!(false, "asymmetric: {:?} / {:?}", x, y),
            }
        }

        /// A host's own settings: any two hosts with AES hardware and `auto` use AES-256-GCM,
        /// any `auto` pair with a host without it ChaCha20-Poly1305, and a pair fails only on
        /// two different pins.
        #[test]
        fn settings_decide_as_documented(
            sa in prop_oneof![Just(AUTO), Just(PIN_AES), Just(PIN_CHACHA)],
            sb in prop_oneof![Just(AUTO), Just(PIN_AES), Just(PIN_CHACHA)],
            ha in any::<bool>(),
            hb in any::<bool>(),
        ) {
            let got = pick((sa, ha), (sb, hb));
            match (sa, sb) {
                (CipherSetting::Pinned(x), CipherSetting::Pinned(y)) if x != y => prop_assert!(got.is_err()),
                (CipherSetting::Pinned(x), _) | (_, CipherSetting::Pinned(x)) => prop_assert_eq!(got.unwrap(), x),
                _ => prop_assert_eq!(got.unwrap(), if ha && hb { Aes } else { ChaCha }),
            }
        }
    }
}
