use super::*;
use crate::auth::mint_token;

const NOW: u64 = 1_000;

fn facts(path: &str) -> JoinFacts<'_> {
    JoinFacts {
        path,
        query: "",
        origin: None,
        connections: ConnectionCounts::default(),
        shutting_down: false,
        now_unix: NOW,
    }
}

fn with_query<'a>(path: &'a str, query: &'a str) -> JoinFacts<'a> {
    JoinFacts {
        query,
        ..facts(path)
    }
}

fn refused(config: &LobbyConfig, rooms: &Rooms, facts: &JoinFacts<'_>) -> (Reason, u16) {
    let refusal = admit(config, facts, rooms).expect_err("the join should be refused");
    (refusal.reason, refusal.status.as_u16())
}

#[test]
fn a_plain_join_names_its_room() {
    let config = LobbyConfig::local();
    let rooms = Rooms::new(config.room_capacity);
    assert_eq!(
        admit(&config, &facts("/arena"), &rooms),
        Ok(RoomRequest {
            name: "arena".into(),
            next: None
        })
    );
    let request = admit(&config, &with_query("/duel", "next=3"), &rooms).unwrap();
    assert_eq!(request.next, Some(3));
}

#[test]
fn connection_limits_come_first() {
    let mut config = LobbyConfig {
        max_connections: 10,
        max_connections_per_ip: 2,
        ..LobbyConfig::local()
    };
    let rooms = Rooms::new(config.room_capacity);
    let mut busy = JoinFacts {
        connections: ConnectionCounts {
            total: 10,
            from_address: 0,
        },
        shutting_down: true,
        ..facts("/a/b")
    };
    assert_eq!(
        refused(&config, &rooms, &busy),
        (Reason::TooManyConnections, 503)
    );
    busy.connections = ConnectionCounts {
        total: 3,
        from_address: 2,
    };
    assert_eq!(
        refused(&config, &rooms, &busy),
        (Reason::TooManyFromAddress, 429)
    );
    busy.connections.from_address = 1;
    assert_eq!(refused(&config, &rooms, &busy), (Reason::ShuttingDown, 503));
    config.max_connections_per_ip = 0;
    busy.connections.from_address = 1_000;
    busy.shutting_down = false;
    assert_eq!(refused(&config, &rooms, &busy), (Reason::BadRoom, 400));
}

#[test]
fn origins_rooms_and_next_are_checked() {
    let config = LobbyConfig {
        allowed_origins: vec!["https://game.example".into()],
        max_next: 4,
        ..LobbyConfig::local()
    };
    let rooms = Rooms::new(config.room_capacity);
    let allowed = JoinFacts {
        origin: Some("https://game.example"),
        ..facts("/room")
    };
    assert!(admit(&config, &allowed, &rooms).is_ok());
    for origin in [None, Some("https://evil.example")] {
        let facts = JoinFacts {
            origin,
            ..facts("/room")
        };
        assert_eq!(
            refused(&config, &rooms, &facts),
            (Reason::OriginNotAllowed, 403)
        );
    }
    for next in ["next=1", "next=5", "next=x"] {
        let facts = JoinFacts {
            query: next,
            ..allowed
        };
        let refusal = admit(&config, &facts, &rooms).unwrap_err();
        assert_eq!(refusal.reason, Reason::BadNext);
        assert!(refusal.message.contains("from 2 to 4"), "{refusal:?}");
    }
}

#[test]
fn tokens_open_their_room_until_they_expire() {
    let config = LobbyConfig {
        secret: Some("s".into()),
        ..LobbyConfig::local()
    };
    let rooms = Rooms::new(config.room_capacity);
    let token = format!("token={}", mint_token(b"s", "arena", NOW + 60));
    assert!(admit(&config, &with_query("/arena", &token), &rooms).is_ok());
    assert_eq!(
        refused(&config, &rooms, &with_query("/arena", "")),
        (Reason::MissingToken, 401)
    );
    assert_eq!(
        refused(&config, &rooms, &with_query("/other", &token)),
        (Reason::BadToken, 401)
    );
    let late = JoinFacts {
        now_unix: NOW + 60,
        ..with_query("/arena", &token)
    };
    assert_eq!(refused(&config, &rooms, &late), (Reason::ExpiredToken, 401));
}

#[test]
fn a_full_room_is_a_conflict() {
    let config = LobbyConfig {
        room_capacity: 1,
        ..LobbyConfig::local()
    };
    let mut rooms = Rooms::new(config.room_capacity);
    let request = admit(&config, &facts("/solo"), &rooms).unwrap();
    rooms
        .join(uuid::Uuid::from_u128(1), request)
        .expect("the first peer joins");
    let refusal = admit(&config, &facts("/solo"), &rooms).unwrap_err();
    assert_eq!(
        (refusal.reason, refusal.status.as_u16()),
        (Reason::RoomFull, 409)
    );
    assert!(refusal.message.contains("full (1 peers)"), "{refusal:?}");
}
