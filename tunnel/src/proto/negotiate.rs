//! Version negotiation: both sides send a [`Hello`] with the range they speak; the shadow picks
//! the highest version in both ranges and answers `Accept`, or `Refuse` with a reason. ktx
//! checks the answer against its own computation.
//!
//! When the ranges do not overlap, each side words the problem from its own point of view and
//! says which part to upgrade ([`Incompatible`]); ktx does not retry such a shadow.

use std::fmt;

use super::frame::{Accept, Frame, Hello, Purpose, Refuse, RefuseCode, Role};
use super::{VersionRange, CONNECT_MIN_VERSION};

/// The highest version in both ranges, if any.
pub fn common_version(a: VersionRange, b: VersionRange) -> Option<u16> {
    let lo = a.min().max(b.min());
    let hi = a.max().min(b.max());
    (lo <= hi).then_some(hi)
}

/// Two peers without a protocol version in common. `Display` is the message for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Incompatible {
    /// This side's hello.
    pub local: Hello,
    /// The other side's hello.
    pub remote: Hello,
}

impl fmt::Display for Incompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (l, r) = (&self.local, &self.remote);
        let remote_is_older = r.protocol.max() < l.protocol.min();
        match l.role {
            Role::Ktx => {
                let advice = if remote_is_older {
                    "use a newer shadow image (--shadowImage) or an older ktx"
                } else {
                    "upgrade ktx"
                };
                write!(
                    f,
                    "{} speaks tunnel protocol {}, the shadow image ({}) speaks {}: {advice}",
                    l.software, l.protocol, r.software, r.protocol
                )
            }
            Role::Shadow => {
                let advice = if remote_is_older {
                    "upgrade ktx"
                } else {
                    "use a newer shadow image (ktx --shadowImage) or an older ktx"
                };
                write!(
                    f,
                    "{} speaks tunnel protocol {}, the connecting ktx ({}) speaks {}: {advice}",
                    l.software, l.protocol, r.software, r.protocol
                )
            }
        }
    }
}

/// The pod's answer to a ktx hello, leaving out "busy" (the driver decides that with an
/// atomic claim after this returns `Ok`). `ours.purpose` is what this pod is for.
///
/// Checked in this order: role, version, purpose. Version first, so a pod that is older than
/// the purpose (protocol 1 knows none) and a newer one narrowed to version 1 answer alike.
/// A version-1 session has no purpose tag and means serve; connect needs version 2.
pub fn shadow_verdict(ours: &Hello, theirs: &Hello) -> Result<u16, Refuse> {
    if theirs.role != Role::Ktx {
        return Err(Refuse {
            code: RefuseCode::BadPreamble,
            message: format!("expected a hello from ktx, got one from a {}", theirs.role),
        });
    }
    let version = common_version(ours.protocol, theirs.protocol).ok_or_else(|| Refuse {
        code: RefuseCode::Incompatible,
        message: Incompatible {
            local: ours.clone(),
            remote: theirs.clone(),
        }
        .to_string(),
    })?;
    let (mine, asked) = (ours.purpose(), theirs.purpose());
    if mine != asked {
        return Err(wrong_purpose(&ours.software, mine, asked));
    }
    if asked == Purpose::Connect && version < CONNECT_MIN_VERSION {
        return Err(Refuse {
            code: RefuseCode::BadPreamble,
            message: format!(
                "purpose connect needs tunnel protocol {CONNECT_MIN_VERSION} or later; \
                 the connecting ktx ({}) offers {}",
                theirs.software, theirs.protocol
            ),
        });
    }
    Ok(version)
}

fn describe(p: Purpose) -> String {
    match p {
        Purpose::Serve => "a mesh shadow (purpose serve: ktx mesh, ktx exchange)".into(),
        Purpose::Connect => "a connect pod (purpose connect: ktx connect)".into(),
        Purpose::Other(n) => format!("purpose {n}, unknown to this build"),
    }
}

/// The refusal of a session whose purpose is not this pod's.
fn wrong_purpose(software: &str, mine: Purpose, asked: Purpose) -> Refuse {
    let asked = match asked {
        Purpose::Serve => "serve (ktx mesh, ktx exchange)".to_string(),
        Purpose::Connect => "connect (ktx connect)".to_string(),
        Purpose::Other(n) => format!("{n} (unknown to this build)"),
    };
    Refuse {
        code: RefuseCode::WrongPurpose,
        message: format!(
            "this pod ({software}) is {}; it does not take a session with purpose {asked}",
            describe(mine)
        ),
    }
}

/// The refusal sent when another session already holds the shadow.
pub fn busy_refusal() -> Refuse {
    Refuse {
        code: RefuseCode::Busy,
        message: "this shadow already carries a tunnel from a ktx session; \
                  one session per shadow pod"
            .into(),
    }
}

/// Why ktx did not get a session from the shadow's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Incompatible(#[from] Incompatible),
    #[error("the shadow is busy: {0}")]
    Busy(String),
    #[error("the pod is not for this kind of session: {0}")]
    WrongPurpose(String),
    #[error("the shadow refused the tunnel (code {code:?}): {message}")]
    Other { code: RefuseCode, message: String },
    #[error("the peer sent a {0} frame where the shadow's hello belongs")]
    NotAHello(&'static str),
    #[error("the peer is not a shadow (its hello says {0})")]
    NotAShadow(Role),
    #[error("the shadow sent another hello instead of accepting or refusing")]
    SecondHello,
    #[error("the shadow accepted protocol version {accepted}, which is outside {ours} (ours) or {theirs} (its own)")]
    BadAccept {
        accepted: u16,
        ours: VersionRange,
        theirs: VersionRange,
    },
}

impl Refused {
    /// Retrying the same shadow cannot help: only a different ktx or image can.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Refused::Incompatible(_) | Refused::NotAShadow(_) | Refused::WrongPurpose(_)
        )
    }
}

/// ktx's check of the shadow's hello, before reading its verdict.
pub fn ktx_check_hello(theirs: &Frame) -> Result<&Hello, Refused> {
    match theirs {
        Frame::Hello(h) if h.role == Role::Shadow => Ok(h),
        Frame::Hello(h) => Err(Refused::NotAShadow(h.role)),
        Frame::Accept(_) => Err(Refused::NotAHello("Accept")),
        Frame::Refuse(_) => Err(Refused::NotAHello("Refuse")),
    }
}

/// ktx's conclusion from both hellos and the shadow's verdict: the version to speak.
pub fn ktx_conclude(ours: &Hello, theirs: &Hello, verdict: &Frame) -> Result<u16, Refused> {
    match verdict {
        Frame::Accept(Accept { version }) => {
            let v = *version;
            if ours.protocol.contains(v) && theirs.protocol.contains(v) {
                Ok(v)
            } else {
                Err(Refused::BadAccept {
                    accepted: v,
                    ours: ours.protocol,
                    theirs: theirs.protocol,
                })
            }
        }
        Frame::Refuse(r) => Err(match r.code {
            // Our own wording: it speaks to the developer and names what to upgrade.
            RefuseCode::Incompatible
                if common_version(ours.protocol, theirs.protocol).is_none() =>
            {
                Refused::Incompatible(Incompatible {
                    local: ours.clone(),
                    remote: theirs.clone(),
                })
            }
            RefuseCode::Busy => Refused::Busy(r.message.clone()),
            RefuseCode::WrongPurpose => Refused::WrongPurpose(r.message.clone()),
            code => Refused::Other {
                code,
                message: r.message.clone(),
            },
        }),
        Frame::Hello(_) => Err(Refused::SecondHello),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(role: Role, min: u16, max: u16, software: &str) -> Hello {
        Hello {
            role,
            protocol: VersionRange::new(min, max).unwrap(),
            software: software.into(),
            purpose: None,
        }
    }

    fn with(mut h: Hello, p: Purpose) -> Hello {
        h.purpose = Some(p);
        h
    }

    #[test]
    fn connect_ktx_and_old_shadow_find_no_version_and_say_which_to_upgrade() {
        let ktx = with(hello(Role::Ktx, 2, 2, "ktx 0.2.0"), Purpose::Connect);
        // A version-1 shadow sends no purpose and knows none.
        let shadow = hello(Role::Shadow, 1, 1, "ktx-shadow 0.1.0");
        let refuse = shadow_verdict(&shadow, &ktx).unwrap_err();
        assert_eq!(refuse.code, RefuseCode::Incompatible);
        let err = ktx_conclude(&ktx, &shadow, &Frame::Refuse(refuse)).unwrap_err();
        assert!(err.is_permanent());
        assert!(
            err.to_string()
                .ends_with("speaks 1..1: use a newer shadow image (--shadowImage) or an older ktx"),
            "{err}"
        );
    }

    #[test]
    fn a_purpose_other_than_the_pods_is_refused_for_good_both_ways() {
        let mesh_pod = with(
            hello(Role::Shadow, 1, 2, "ktx-shadow 0.2.0"),
            Purpose::Serve,
        );
        let connect_pod = with(
            hello(Role::Shadow, 1, 2, "ktx-shadow 0.2.0"),
            Purpose::Connect,
        );
        let connect_ktx = with(hello(Role::Ktx, 2, 2, "ktx 0.2.0"), Purpose::Connect);
        let mesh_ktx = with(hello(Role::Ktx, 1, 2, "ktx 0.2.0"), Purpose::Serve);
        let old_ktx = hello(Role::Ktx, 1, 1, "ktx 0.1.0");
        for (pod, ktx) in [
            (&mesh_pod, &connect_ktx),
            (&connect_pod, &mesh_ktx),
            (&connect_pod, &old_ktx),
        ] {
            let refuse = shadow_verdict(pod, ktx).unwrap_err();
            assert_eq!(refuse.code, RefuseCode::WrongPurpose, "{}", refuse.message);
            let err = ktx_conclude(ktx, pod, &Frame::Refuse(refuse)).unwrap_err();
            assert!(err.is_permanent(), "{err}");
        }
        let refuse = shadow_verdict(&mesh_pod, &connect_ktx).unwrap_err();
        assert_eq!(
            refuse.message,
            "this pod (ktx-shadow 0.2.0) is a mesh shadow (purpose serve: ktx mesh, ktx exchange); \
             it does not take a session with purpose connect (ktx connect)"
        );
        let future = with(hello(Role::Ktx, 2, 2, "ktx 9"), Purpose::Other(7));
        let refuse = shadow_verdict(&connect_pod, &future).unwrap_err();
        assert_eq!(refuse.code, RefuseCode::WrongPurpose);
        assert!(refuse
            .message
            .ends_with("purpose 7 (unknown to this build)"));
    }

    #[test]
    fn matching_purposes_agree_and_serve_is_the_default() {
        let mesh_pod = with(hello(Role::Shadow, 1, 2, "s"), Purpose::Serve);
        let connect_pod = with(hello(Role::Shadow, 1, 2, "s"), Purpose::Connect);
        // New ktx ⇄ new mesh shadow: version 2 with purpose serve, which is version 1's streams.
        let mesh_ktx = with(hello(Role::Ktx, 1, 2, "k"), Purpose::Serve);
        assert_eq!(shadow_verdict(&mesh_pod, &mesh_ktx), Ok(2));
        // Old ktx (no purpose) ⇄ new mesh shadow: version 1.
        assert_eq!(
            shadow_verdict(&mesh_pod, &hello(Role::Ktx, 1, 1, "k")),
            Ok(1)
        );
        let connect_ktx = with(hello(Role::Ktx, 2, 2, "k"), Purpose::Connect);
        assert_eq!(shadow_verdict(&connect_pod, &connect_ktx), Ok(2));
        // A ktx that claims connect but offers only version 1 is refused.
        let broken = with(hello(Role::Ktx, 1, 1, "k"), Purpose::Connect);
        let refuse = shadow_verdict(&connect_pod, &broken).unwrap_err();
        assert_eq!(refuse.code, RefuseCode::BadPreamble);
    }

    #[test]
    fn picks_the_highest_common_version() {
        let r = |a, b| VersionRange::new(a, b).unwrap();
        assert_eq!(common_version(r(1, 3), r(2, 5)), Some(3));
        assert_eq!(common_version(r(1, 1), r(1, 1)), Some(1));
        assert_eq!(common_version(r(1, 1), r(2, 3)), None);
    }

    #[test]
    fn old_ktx_new_shadow_says_upgrade_ktx() {
        let ktx = hello(Role::Ktx, 1, 1, "ktx 0.1.0");
        let shadow = hello(Role::Shadow, 2, 3, "ktx-shadow 0.3.0");
        let refuse = shadow_verdict(&shadow, &ktx).unwrap_err();
        assert_eq!(refuse.code, RefuseCode::Incompatible);
        assert_eq!(
            refuse.message,
            "ktx-shadow 0.3.0 speaks tunnel protocol 2..3, the connecting ktx (ktx 0.1.0) \
             speaks 1..1: upgrade ktx"
        );
        let err = ktx_conclude(&ktx, &shadow, &Frame::Refuse(refuse)).unwrap_err();
        assert!(err.is_permanent());
        assert_eq!(
            err.to_string(),
            "ktx 0.1.0 speaks tunnel protocol 1..1, the shadow image (ktx-shadow 0.3.0) \
             speaks 2..3: upgrade ktx"
        );
    }

    #[test]
    fn new_ktx_old_shadow_says_newer_image() {
        let ktx = hello(Role::Ktx, 4, 5, "ktx 0.9.0");
        let shadow = hello(Role::Shadow, 1, 2, "ktx-shadow 0.1.0");
        let refuse = shadow_verdict(&shadow, &ktx).unwrap_err();
        let err = ktx_conclude(&ktx, &shadow, &Frame::Refuse(refuse)).unwrap_err();
        assert!(err
            .to_string()
            .ends_with("speaks 1..2: use a newer shadow image (--shadowImage) or an older ktx"));
    }

    #[test]
    fn accept_is_checked_against_both_ranges() {
        let ktx = hello(Role::Ktx, 1, 2, "ktx");
        let shadow = hello(Role::Shadow, 2, 4, "shadow");
        assert_eq!(shadow_verdict(&shadow, &ktx), Ok(2));
        let ok = Frame::Accept(Accept { version: 2 });
        assert_eq!(ktx_conclude(&ktx, &shadow, &ok), Ok(2));
        let bad = Frame::Accept(Accept { version: 3 });
        assert!(matches!(
            ktx_conclude(&ktx, &shadow, &bad),
            Err(Refused::BadAccept { accepted: 3, .. })
        ));
    }

    #[test]
    fn busy_and_unknown_refusals_keep_the_shadows_words() {
        let ktx = hello(Role::Ktx, 1, 1, "ktx");
        let shadow = hello(Role::Shadow, 1, 1, "shadow");
        let busy = ktx_conclude(&ktx, &shadow, &Frame::Refuse(busy_refusal())).unwrap_err();
        assert!(matches!(busy, Refused::Busy(_)) && !busy.is_permanent());
        let other = Frame::Refuse(Refuse {
            code: RefuseCode::Other(9),
            message: "draining".into(),
        });
        assert!(ktx_conclude(&ktx, &shadow, &other)
            .unwrap_err()
            .to_string()
            .contains("draining"));
    }

    #[test]
    fn a_ktx_hello_from_the_shadow_side_is_refused() {
        let shadow = hello(Role::Shadow, 1, 1, "shadow");
        let refuse = shadow_verdict(&shadow, &shadow.clone()).unwrap_err();
        assert_eq!(refuse.code, RefuseCode::BadPreamble);
        assert!(matches!(
            ktx_check_hello(&Frame::Hello(hello(Role::Ktx, 1, 1, "x"))),
            Err(Refused::NotAShadow(Role::Ktx))
        ));
    }
}
