use super::*;

/// A minimal data-channel offer in webrtc-rs's shape (as matchbox native sends it).
pub(crate) fn offer() -> String {
    sdp_with("actpass", "")
}

fn sdp_with(setup: &str, extra: &str) -> String {
    let fingerprint = (0..32).map(|i| format!("{i:02X}")).collect::<Vec<_>>();
    format!(
        "v=0\r\no=- 4215469786452367785 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
         a=fingerprint:sha-256 {}\r\na=group:BUNDLE 0\r\n\
         m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
         a=setup:{setup}\r\na=mid:0\r\na=sendrecv\r\na=sctp-port:5000\r\n\
         a=ice-ufrag:AbCdEfGhIjKlMnOp\r\na=ice-pwd:AbCdEfGhIjKlMnOpQrStUvWxYz012345\r\n{extra}",
        fingerprint.join(":")
    )
}

fn json(kind: &str, text: &str) -> String {
    serde_json::json!({ kind: text }).to_string()
}

fn check(data: &str) -> Result<Option<SentDescription>, InvalidSignal> {
    let mut sent = None;
    check_signal(data, DEFAULT_MAX_SDP_SIZE, &mut sent).map(|()| sent)
}

fn problem(data: &str) -> String {
    check(data)
        .expect_err("the lobby should refuse this signal")
        .to_string()
}

#[test]
fn real_shaped_offers_and_answers_pass_and_are_remembered() {
    let sent = check(&json("Offer", &offer())).unwrap().unwrap();
    assert_eq!(sent.mids, vec!["0"]);
    assert_eq!(sent.ufrag, "AbCdEfGhIjKlMnOp");
    assert!(check(&json("Answer", &sdp_with("active", ""))).is_ok());
    let with_candidate = sdp_with(
        "actpass",
        "a=candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host generation 0\r\n\
         a=candidate:2 1 udp 1694498815 203.0.113.7 61000 typ srflx raddr 192.0.2.10 rport 50000\r\n\
         a=candidate:3 1 tcp 1518280447 9b36e6b4-9b0c-4a4c-9c4e-7d3c6d0b8f11.local 9 typ host tcptype active\r\n\
         a=end-of-candidates\r\n",
    );
    assert!(check(&json("Offer", &with_candidate)).is_ok());
}

#[test]
fn garbage_and_unusable_descriptions_are_refused() {
    for (sdp, says) in [
        ("not an sdp at all".to_owned(), "does not parse"),
        (String::new(), "does not parse"),
        (
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n".to_owned(),
            "no media section",
        ),
        (
            offer().replace("a=ice-ufrag:AbCdEfGhIjKlMnOp\r\n", ""),
            "no a=ice-ufrag",
        ),
        (
            offer().replace("a=ice-ufrag:AbCdEfGhIjKlMnOp", "a=ice-ufrag:Ab"),
            "4 to 256",
        ),
        (offer().replace("a=mid:0\r\n", ""), "no a=mid"),
        (
            offer().replace("a=fingerprint", "a=x-fingerprint"),
            "no a=fingerprint",
        ),
        (offer().replace("sha-256", "sha-1"), "sha-256"),
        (offer().replace(":1F\r\n", ":1\r\n"), "32 hex bytes"),
        (offer().replace("a=setup:actpass\r\n", ""), "no a=setup"),
        (
            offer().replace("webrtc-datachannel", "5000"),
            "only data-channel",
        ),
        (
            offer().replace(
                "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
                "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            ),
            "not m=audio",
        ),
        (
            sdp_with(
                "actpass",
                "a=candidate:1 1 udp 1 not-an-ip 5000 typ host\r\n",
            ),
            "address",
        ),
        (sdp_with("actpass", "a=sctp-port:lots\r\n"), "sctp-port"),
    ] {
        let text = problem(&json("Offer", &sdp));
        assert!(text.contains(says), "{text:?} should say {says:?}");
        assert!(text.starts_with("Offer is not usable SDP") || text.contains("bytes"));
    }
    let text = problem(&json("Answer", &sdp_with("actpass", "")));
    assert!(
        text.contains("a=setup:actpass is not allowed in an Answer"),
        "{text}"
    );
}

#[test]
fn descriptions_over_the_bound_are_refused_before_parsing() {
    let huge = format!("{}{}", offer(), "a=x:y\r\n".repeat(4000));
    let mut sent = None;
    let error = check_signal(&json("Offer", &huge), 16 * 1024, &mut sent).unwrap_err();
    assert!(
        matches!(error, InvalidSignal::TooLarge { kind: "Offer", .. }),
        "{error}"
    );
    assert!(sent.is_none());
}

fn candidate(init: serde_json::Value) -> String {
    json("IceCandidate", &init.to_string())
}

#[test]
fn candidates_must_belong_to_a_description_their_sender_sent() {
    let native = candidate(serde_json::json!({
        "candidate": "candidate:2930079447 1 udp 2130706431 192.0.2.10 54321 typ host",
        "sdpMid": "", "sdpMLineIndex": 0
    }));
    let mut sent = None;
    let before = check_signal(&native, DEFAULT_MAX_SDP_SIZE, &mut sent).unwrap_err();
    assert!(before.to_string().contains("before any offer"), "{before}");
    check_signal(&json("Offer", &offer()), DEFAULT_MAX_SDP_SIZE, &mut sent).unwrap();
    let ok = |data: &str| check_signal(data, DEFAULT_MAX_SDP_SIZE, &mut sent.clone());
    assert_eq!(ok(&native), Ok(()));
    let browser = candidate(serde_json::json!({
        "candidate": "candidate:842163049 1 udp 1677729535 203.0.113.7 61000 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag AbCdEfGhIjKlMnOp network-cost 999",
        "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "AbCdEfGhIjKlMnOp"
    }));
    assert_eq!(ok(&browser), Ok(()));
    assert_eq!(
        ok(&json("IceCandidate", "null")),
        Ok(()),
        "the browser's end of candidates"
    );
    let end = candidate(serde_json::json!({"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}));
    assert_eq!(ok(&end), Ok(()), "an empty candidate ends them too");

    for (init, says) in [
        (serde_json::json!("garbage"), "not a candidate init"),
        (serde_json::json!({"sdpMid": "0"}), "not a candidate init"),
        (
            serde_json::json!({"candidate": "1 1 udp 1 192.0.2.1 9 typ host", "sdpMid": "0"}),
            "does not start with",
        ),
        (
            serde_json::json!({"candidate": "candidate:x", "sdpMid": "0"}),
            "fields",
        ),
        (
            serde_json::json!({"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ cosmic", "sdpMid": "0"}),
            "type",
        ),
        (
            serde_json::json!({"candidate": "candidate:1 1 udp 1 192.0.2.1 70000 typ host", "sdpMid": "0"}),
            "port",
        ),
        (
            serde_json::json!({"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host", "sdpMid": "7"}),
            "sdpMid \"7\"",
        ),
        (
            serde_json::json!({"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host", "sdpMLineIndex": 3}),
            "sdpMLineIndex 3",
        ),
        (
            serde_json::json!({"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host"}),
            "neither sdpMid",
        ),
        (
            serde_json::json!({"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host", "sdpMid": "0", "usernameFragment": "other"}),
            "usernameFragment",
        ),
    ] {
        let error = ok(&candidate(init.clone())).unwrap_err().to_string();
        assert!(
            error.contains(says),
            "{init}: {error:?} should say {says:?}"
        );
    }
    let long = json("IceCandidate", &"x".repeat(MAX_CANDIDATE_SIZE + 1));
    assert!(matches!(ok(&long), Err(InvalidSignal::TooLarge { .. })));
}

#[test]
fn a_later_answer_replaces_what_candidates_are_checked_against() {
    let mut sent = None;
    check_signal(&json("Offer", &offer()), DEFAULT_MAX_SDP_SIZE, &mut sent).unwrap();
    let renamed = sdp_with("active", "").replace("a=mid:0", "a=mid:data");
    check_signal(&json("Answer", &renamed), DEFAULT_MAX_SDP_SIZE, &mut sent).unwrap();
    assert_eq!(sent.unwrap().mids, vec!["data"]);
}
