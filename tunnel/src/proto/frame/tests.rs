//! Golden bytes pin the wire format; property tests feed the decoder arbitrary and mutated
//! input (it must never panic, never over-read, and round-trip what the encoder writes).

use proptest::prelude::*;

use super::*;

fn hello(role: Role, min: u16, max: u16, software: &str) -> Frame {
    Frame::Hello(Hello {
        role,
        protocol: VersionRange::new(min, max).unwrap(),
        software: software.into(),
        purpose: None,
    })
}

fn complete(bytes: &[u8]) -> (Frame, usize) {
    match decode(bytes).unwrap() {
        Decoded::Complete { frame, consumed } => (frame, consumed),
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[test]
fn golden_hello() {
    let bytes = hello(Role::Ktx, 1, 1, "ktx 0.1.0").encode();
    #[rustfmt::skip]
    let want: &[u8] = &[
        b'K', b'T', b'X', b'T', 0x01, 0x00, 0x14,
        0x01, 0x01, 0x01,                         // role = ktx
        0x02, 0x04, 0x00, 0x01, 0x00, 0x01,       // protocol 1..1
        0x03, 0x09, b'k', b't', b'x', b' ', b'0', b'.', b'1', b'.', b'0',
    ];
    assert_eq!(bytes, want);
    assert_eq!(
        complete(want),
        (hello(Role::Ktx, 1, 1, "ktx 0.1.0"), want.len())
    );
}

#[test]
fn golden_hello_with_purpose_connect() {
    let Frame::Hello(mut h) = hello(Role::Ktx, 2, 2, "ktx") else {
        unreachable!()
    };
    h.purpose = Some(Purpose::Connect);
    let bytes = Frame::Hello(h.clone()).encode();
    #[rustfmt::skip]
    let want: &[u8] = &[
        b'K', b'T', b'X', b'T', 0x01, 0x00, 0x11,
        0x01, 0x01, 0x01,                         // role = ktx
        0x02, 0x04, 0x00, 0x02, 0x00, 0x02,       // protocol 2..2
        0x03, 0x03, b'k', b't', b'x',
        0x04, 0x01, 0x02,                         // purpose = connect
    ];
    assert_eq!(bytes, want);
    assert_eq!(complete(want), (Frame::Hello(h), want.len()));
    // A purpose this build does not know is kept, to be refused in words.
    let mut future = want.to_vec();
    *future.last_mut().unwrap() = 9;
    let (Frame::Hello(h), _) = complete(&future) else {
        panic!()
    };
    assert_eq!(h.purpose, Some(Purpose::Other(9)));
}

#[test]
fn golden_accept_and_refuse() {
    let accept = Frame::Accept(Accept { version: 1 }).encode();
    assert_eq!(accept, b"KTXT\x02\x00\x04\x01\x02\x00\x01");
    let refuse = Frame::Refuse(Refuse {
        code: RefuseCode::Busy,
        message: "busy".into(),
    })
    .encode();
    assert_eq!(refuse, b"KTXT\x03\x00\x09\x01\x01\x02\x02\x04busy");
    let wrong = Frame::Refuse(Refuse {
        code: RefuseCode::WrongPurpose,
        message: "no".into(),
    })
    .encode();
    assert_eq!(wrong, b"KTXT\x03\x00\x07\x01\x01\x04\x02\x02no");
}

#[test]
fn shadow_hello_from_a_future_version_still_decodes() {
    // A newer shadow adds tag 9 (unknown here) and a refusal code 42: both survive.
    let mut body = vec![0x09, 0x03, 1, 2, 3];
    body.extend_from_slice(&[0x01, 0x01, 0x02, 0x02, 0x04, 0x00, 0x02, 0x00, 0x05]);
    let mut bytes = b"KTXT\x01".to_vec();
    bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&body);
    let (frame, _) = complete(&bytes);
    assert_eq!(frame, hello(Role::Shadow, 2, 5, "unknown"));

    let refuse = b"KTXT\x03\x00\x07\x01\x01\x2a\x02\x02hi";
    let (frame, _) = complete(refuse);
    assert_eq!(
        frame,
        Frame::Refuse(Refuse {
            code: RefuseCode::Other(42),
            message: "hi".into()
        })
    );
}

#[test]
fn garbage_is_rejected_early() {
    // An HTTP/2 preface or plain HTTP is not a preamble: refused on the first byte.
    assert!(matches!(decode(b"P"), Err(FrameError::BadMagic(_))));
    assert!(matches!(
        decode(b"GET / HTTP/1.1\r\n"),
        Err(FrameError::BadMagic(_))
    ));
    assert_eq!(
        decode(b"KT").unwrap(),
        Decoded::Incomplete { needed: HEADER_LEN }
    );
    assert!(matches!(
        decode(b"KTXT\x07\x00\x00"),
        Err(FrameError::UnknownKind(7))
    ));
    assert!(matches!(
        decode(b"KTXT\x01\xff\xff"),
        Err(FrameError::TooLong(65535))
    ));
}

#[test]
fn malformed_fields_are_errors() {
    let missing_role = b"KTXT\x01\x00\x06\x02\x04\x00\x01\x00\x01";
    assert!(matches!(
        decode(missing_role),
        Err(FrameError::Missing { field: "role", .. })
    ));
    let twice = b"KTXT\x02\x00\x08\x01\x02\x00\x01\x01\x02\x00\x02";
    assert!(matches!(
        decode(twice),
        Err(FrameError::Duplicate {
            field: "version",
            ..
        })
    ));
    let cut = b"KTXT\x02\x00\x03\x01\x02\x00";
    assert!(matches!(decode(cut), Err(FrameError::Truncated { .. })));
    let zero_range = b"KTXT\x01\x00\x09\x01\x01\x01\x02\x04\x00\x00\x00\x01";
    assert!(matches!(
        decode(zero_range),
        Err(FrameError::BadValue {
            field: "protocol",
            ..
        })
    ));
}

#[test]
fn long_text_is_clipped_on_a_char_boundary() {
    let long = "é".repeat(200); // 400 bytes
    let (frame, _) = complete(&hello(Role::Ktx, 1, 1, &long).encode());
    let Frame::Hello(h) = frame else { panic!() };
    assert_eq!(h.software.len(), 254);
    assert!(long.starts_with(&h.software));
}

fn arb_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(".{0,80}").expect("valid regex")
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let range = (1u16..=u16::MAX).prop_flat_map(|min| (Just(min), min..=u16::MAX));
    prop_oneof![
        (any::<bool>(), range, arb_text(), any::<Option<u8>>()).prop_map(
            |(ktx, (min, max), software, purpose)| {
                Frame::Hello(Hello {
                    role: if ktx { Role::Ktx } else { Role::Shadow },
                    protocol: VersionRange::new(min, max).unwrap(),
                    software,
                    purpose: purpose.map(Purpose::from_wire),
                })
            }
        ),
        any::<u16>().prop_map(|version| Frame::Accept(Accept { version })),
        (any::<u8>(), arb_text()).prop_map(|(code, message)| Frame::Refuse(Refuse {
            code: RefuseCode::from_wire(code),
            message,
        })),
    ]
}

proptest! {
    #[test]
    fn decoder_never_panics_or_overreads(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
        match decode(&bytes) {
            Ok(Decoded::Complete { consumed, .. }) => prop_assert!(consumed <= bytes.len()),
            Ok(Decoded::Incomplete { needed }) => {
                prop_assert!(needed > bytes.len());
                prop_assert!(needed <= HEADER_LEN + MAX_BODY_LEN);
            }
            Err(_) => {}
        }
    }

    #[test]
    fn decoder_survives_mutated_frames(frame in arb_frame(), at in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = frame.encode();
        let i = at % bytes.len();
        bytes[i] = byte;
        let _ = decode(&bytes);
    }

    #[test]
    fn round_trip_with_trailing_bytes(frame in arb_frame(), tail in proptest::collection::vec(any::<u8>(), 0..32)) {
        let mut bytes = frame.encode();
        let len = bytes.len();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(decode(&bytes).unwrap(), Decoded::Complete { frame, consumed: len });
    }

    #[test]
    fn every_prefix_asks_for_more(frame in arb_frame()) {
        let bytes = frame.encode();
        for cut in 0..bytes.len() {
            match decode(&bytes[..cut]).unwrap() {
                Decoded::Incomplete { needed } => {
                    prop_assert!(needed > cut && needed <= bytes.len());
                }
                other => prop_assert!(false, "prefix {} decoded as {:?}", cut, other),
            }
        }
    }
}
