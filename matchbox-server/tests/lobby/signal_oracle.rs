//! The lobby relays only what the receiver can apply: every offer, answer and candidate the
//! lobby's checks accept is applied here to the webrtc-rs core that matchbox_socket runs on
//! native (`rtc`, the version Cargo.lock pins), the way matchbox applies it (`offer`/`answer`,
//! `set_remote_description`, `create_answer`, `set_local_description`, `add_ice_candidate`), all
//! of which matchbox unwraps. Inputs: real descriptions (webrtc-rs's own, Chromium's as captured
//! from a real browser) and about 1,500 mutations of them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use peersync_lobby::signal::{DEFAULT_MAX_SDP_SIZE, SentDescription, check_signal};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};

/// A file of `tests/fixtures/`, compiled in.
macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/",
            $name
        ))
    };
}

const CHROMIUM: [(&str, &str, &str); 2] = [
    (
        fixture!("chromium-real-offer.sdp"),
        fixture!("chromium-real-answer.sdp"),
        fixture!("chromium-real-candidates.json"),
    ),
    (
        fixture!("chromium-mdns-offer.sdp"),
        fixture!("chromium-mdns-answer.sdp"),
        fixture!("chromium-mdns-candidates.json"),
    ),
];

fn peer() -> RTCPeerConnection {
    RTCPeerConnectionBuilder::new()
        .build(Instant::now())
        .expect("a peer connection")
}

/// An offerer as matchbox's: a data channel, its offer set locally.
fn offerer() -> (RTCPeerConnection, String) {
    let mut pc = peer();
    pc.create_data_channel("0", None).expect("a data channel");
    let offer = pc.create_offer(None).expect("an offer");
    let sdp = offer.sdp.clone();
    pc.set_local_description(Instant::now(), offer)
        .expect("its own offer applies");
    (pc, sdp)
}

/// What matchbox's accept_handshake does with an offer; `Err` where it would panic.
fn apply_offer(sdp: &str) -> Result<RTCPeerConnection, String> {
    let mut pc = peer();
    pc.create_data_channel("0", None)
        .map_err(|e| e.to_string())?;
    let offer = RTCSessionDescription::offer(sdp.to_owned()).map_err(|e| e.to_string())?;
    pc.set_remote_description(Instant::now(), offer)
        .map_err(|e| e.to_string())?;
    let answer = pc.create_answer(None).map_err(|e| e.to_string())?;
    pc.set_local_description(Instant::now(), answer)
        .map_err(|e| e.to_string())?;
    Ok(pc)
}

/// What matchbox's offer_handshake does with the answer to its offer.
fn apply_answer(sdp: &str) -> Result<RTCPeerConnection, String> {
    let (mut pc, _) = offerer();
    let answer = RTCSessionDescription::answer(sdp.to_owned()).map_err(|e| e.to_string())?;
    pc.set_remote_description(Instant::now(), answer)
        .map_err(|e| e.to_string())?;
    Ok(pc)
}

fn lobby_accepts(kind: &str, sdp: &str) -> bool {
    let data = serde_json::json!({ kind: sdp }).to_string();
    check_signal(&data, DEFAULT_MAX_SDP_SIZE, &mut None).is_ok()
}

/// Lines deleted, doubled, and with their values replaced by plausible garbage.
fn mutations(sdp: &str) -> Vec<String> {
    let lines: Vec<&str> = sdp.lines().filter(|l| !l.is_empty()).collect();
    let join = |lines: &[String]| lines.iter().map(|l| format!("{l}\r\n")).collect::<String>();
    let mut out = Vec::new();
    for i in 0..lines.len() {
        let owned = || lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        let mut deleted = owned();
        deleted.remove(i);
        out.push(join(&deleted));
        let mut doubled = owned();
        doubled.insert(i, lines[i].to_owned());
        out.push(join(&doubled));
        let line = lines[i];
        let cut = line
            .find(':')
            .or_else(|| line.find('='))
            .map_or(0, |c| c + 1);
        for garbage in [
            "",
            "x",
            "0",
            "-1",
            "99999999999999999999",
            "a b c d e f g h i j",
            "sha-256 00",
            "actpass",
            "active",
            "holdconn",
            "1 1 udp 1 x 1 typ host",
            "é",
        ] {
            let mut replaced = owned();
            replaced[i] = format!("{}{garbage}", &line[..cut]);
            out.push(join(&replaced));
        }
    }
    out
}

fn panics_or_fails<T>(f: impl FnOnce() -> Result<T, String>) -> Option<String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(error),
        Err(_) => Some("panicked".to_owned()),
    }
}

#[test]
fn real_descriptions_pass_the_lobby_and_apply() {
    let (_, native_offer) = offerer();
    let native_answer = apply_offer(&native_offer)
        .unwrap()
        .local_description()
        .unwrap()
        .sdp
        .clone();
    println!(
        "webrtc-rs offer {} bytes, answer {} bytes",
        native_offer.len(),
        native_answer.len()
    );
    assert!(lobby_accepts("Offer", &native_offer), "{native_offer}");
    assert!(lobby_accepts("Answer", &native_answer), "{native_answer}");
    apply_answer(&native_answer).unwrap();
    for (offer, answer, _) in CHROMIUM {
        println!(
            "Chromium offer {} bytes, answer {} bytes",
            offer.len(),
            answer.len()
        );
        assert!(lobby_accepts("Offer", offer), "{offer}");
        assert!(lobby_accepts("Answer", answer), "{answer}");
        apply_offer(offer).unwrap();
        apply_answer(answer).unwrap();
    }
}

#[test]
fn whatever_the_lobby_relays_webrtc_rs_applies() {
    let (_, native_offer) = offerer();
    let native_answer = apply_offer(&native_offer)
        .unwrap()
        .local_description()
        .unwrap()
        .sdp
        .clone();
    let mut offers = vec![native_offer];
    let mut answers = vec![native_answer];
    for (offer, answer, _) in CHROMIUM {
        offers.push(offer.to_owned());
        answers.push(answer.to_owned());
    }
    let (mut relayed, mut refused) = (0, 0);
    for (kind, bases) in [("Offer", &offers), ("Answer", &answers)] {
        for base in bases {
            for sdp in mutations(base) {
                if !lobby_accepts(kind, &sdp) {
                    refused += 1;
                    continue;
                }
                relayed += 1;
                let failure = if kind == "Offer" {
                    panics_or_fails(|| apply_offer(&sdp))
                } else {
                    panics_or_fails(|| apply_answer(&sdp))
                };
                if let Some(error) = failure {
                    panic!("the lobby relays this {kind}, webrtc-rs fails on it ({error}):\n{sdp}");
                }
            }
        }
    }
    println!("mutations relayed: {relayed}, refused: {refused}");
    assert!(relayed > 100 && refused > 100, "{relayed} / {refused}");
}

#[test]
fn whatever_candidate_the_lobby_relays_webrtc_rs_adds() {
    let (_, offer) = offerer();
    let answerer = apply_offer(&offer).unwrap();
    let answer = answerer.local_description().unwrap().sdp.clone();
    let lines = [
        "candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host",
        "candidate:1 1 UDP 2130706431 2001:db8::1 50000 typ host generation 0",
        "candidate:2 1 udp 1694498815 203.0.113.7 61000 typ srflx raddr 192.0.2.10 rport 50000",
        "candidate:3 1 tcp 1518280447 192.0.2.10 9 typ host tcptype active",
        "candidate:4 1 udp 2113937151 0a9d4ec3-1ef0-4a93-a48c-c6920dc85878.local 57179 typ host",
        "candidate:5 1 udp 16777215 198.51.100.4 3478 typ relay raddr 203.0.113.7 rport 61000",
        "candidate:1 1 udp 1 192.0.2.1 9 typ host x",
        "candidate:1 1 udp 1 192.0.2.1 70000 typ host",
        "candidate:1 1 udp x 192.0.2.1 9 typ host",
        "candidate:1 1 sctp 1 192.0.2.1 9 typ host",
        "candidate:1 1 udp 1 example.com 9 typ host",
        "candidate:1 1 udp 1 192.0.2.1 9 typ srflx raddr",
        "candidate:1 1 udp 1 192.0.2.1 9 type host",
        "",
    ];
    let mut inits: Vec<String> = lines
        .iter()
        .map(|line| {
            serde_json::json!({"candidate": line, "sdpMid": "", "sdpMLineIndex": 0}).to_string()
        })
        .collect();
    for (_, _, trickled) in CHROMIUM {
        let trickled: Vec<String> = serde_json::from_str(trickled).unwrap();
        inits.extend(trickled.into_iter().filter(|c| c != "null").map(|c| {
            // Chromium's candidates name Chromium's ufrag; here they answer webrtc-rs's offer.
            let mut init: serde_json::Value = serde_json::from_str(&c).unwrap();
            init["usernameFragment"] = serde_json::Value::Null;
            init.to_string()
        }));
    }
    // What the lobby remembers of the answerer's description, as it relays it.
    let mut sent: Option<SentDescription> = None;
    check_signal(
        &serde_json::json!({ "Answer": answer }).to_string(),
        DEFAULT_MAX_SDP_SIZE,
        &mut sent,
    )
    .unwrap();
    let mut relayed = 0;
    for init in inits {
        let data = serde_json::json!({ "IceCandidate": init }).to_string();
        if check_signal(&data, DEFAULT_MAX_SDP_SIZE, &mut sent.clone()).is_err() {
            continue;
        }
        relayed += 1;
        let (mut pc, _) = offerer();
        pc.set_remote_description(
            Instant::now(),
            RTCSessionDescription::answer(answer.clone()).unwrap(),
        )
        .unwrap();
        let parsed: RTCIceCandidateInit = serde_json::from_str(&init).unwrap();
        let failure =
            panics_or_fails(|| pc.add_remote_candidate(parsed).map_err(|e| e.to_string()));
        assert_eq!(
            failure, None,
            "the lobby relays {init}, webrtc-rs refuses it"
        );
    }
    assert!(relayed >= 8, "the real candidates pass: {relayed}");
}
