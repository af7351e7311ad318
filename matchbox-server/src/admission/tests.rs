use std::time::Duration;

use super::*;
use crate::auth::{mint_player_token, mint_token};

const NOW: u64 = 1_000;

/// The lobby's state, as the server holds it.
struct World {
    rooms: Rooms,
    leases: TokenLeases,
    limits: JoinLimits,
    config: LobbyConfig,
}

impl World {
    fn new(config: LobbyConfig) -> Self {
        Self {
            rooms: Rooms::new(config.room_capacity),
            leases: TokenLeases::default(),
            limits: JoinLimits::new(&config),
            config,
        }
    }

    fn admit(&mut self, facts: &JoinFacts<'_>) -> Result<Admitted, Refusal> {
        admit(
            &self.config,
            facts,
            JoinState {
                rooms: &self.rooms,
                leases: &self.leases,
                limits: &mut self.limits,
            },
        )
    }

    fn refused(&mut self, facts: &JoinFacts<'_>) -> (Reason, u16) {
        let refusal = self.admit(facts).expect_err("refused");
        (refusal.reason, refusal.status.as_u16())
    }

    /// Admits and joins, as the server does.
    fn join(&mut self, facts: &JoinFacts<'_>, peer: u128) -> Admitted {
        let admitted = self.admit(facts).expect("admitted");
        let peer = uuid::Uuid::from_u128(peer);
        self.rooms.join(peer, admitted.request.clone()).unwrap();
        if let Some(nonce) = &admitted.nonce {
            self.leases
                .take(admitted.request.name.clone(), nonce.clone(), peer);
        }
        admitted
    }
}

fn facts(path: &str) -> JoinFacts<'_> {
    JoinFacts {
        path,
        query: "",
        origin: None,
        address: IpAddr::from([127, 0, 0, 1]),
        connections: ConnectionCounts::default(),
        shutting_down: false,
        now_unix: NOW,
        now: Instant::now(),
    }
}

fn with_query<'a>(path: &'a str, query: &'a str) -> JoinFacts<'a> {
    JoinFacts {
        query,
        ..facts(path)
    }
}

#[test]
fn a_plain_join_names_its_room() {
    let mut world = World::new(LobbyConfig::local());
    let admitted = world.admit(&facts("/arena")).unwrap();
    assert_eq!(
        admitted,
        Admitted {
            request: RoomRequest {
                name: "arena".into(),
                next: None
            },
            nonce: None
        }
    );
    let admitted = world.admit(&with_query("/duel", "next=3")).unwrap();
    assert_eq!(admitted.request.next, Some(3));
}

#[test]
fn connection_limits_come_first() {
    let mut world = World::new(LobbyConfig {
        max_connections: 10,
        max_connections_per_ip: 2,
        ..LobbyConfig::local()
    });
    let mut busy = JoinFacts {
        connections: ConnectionCounts {
            total: 10,
            from_address: 0,
        },
        shutting_down: true,
        ..facts("/a/b")
    };
    assert_eq!(world.refused(&busy), (Reason::TooManyConnections, 503));
    busy.connections = ConnectionCounts {
        total: 3,
        from_address: 2,
    };
    assert_eq!(world.refused(&busy), (Reason::TooManyFromAddress, 429));
    busy.connections.from_address = 1;
    assert_eq!(world.refused(&busy), (Reason::ShuttingDown, 503));
    world.config.max_connections_per_ip = 0;
    busy.connections.from_address = 1_000;
    busy.shutting_down = false;
    assert_eq!(world.refused(&busy), (Reason::BadRoom, 400));
}

#[test]
fn origins_rooms_and_next_are_checked() {
    let mut world = World::new(LobbyConfig {
        allowed_origins: vec!["https://game.example".into()],
        max_next: 4,
        ..LobbyConfig::local()
    });
    let allowed = JoinFacts {
        origin: Some("https://game.example"),
        ..facts("/room")
    };
    assert!(world.admit(&allowed).is_ok());
    for origin in [None, Some("https://evil.example")] {
        let facts = JoinFacts {
            origin,
            ..facts("/room")
        };
        assert_eq!(world.refused(&facts), (Reason::OriginNotAllowed, 403));
    }
    for next in ["next=1", "next=5", "next=x"] {
        let facts = JoinFacts {
            query: next,
            ..allowed
        };
        let refusal = world.admit(&facts).unwrap_err();
        assert_eq!(refusal.reason, Reason::BadNext);
        assert!(refusal.message.contains("from 2 to 4"), "{refusal:?}");
    }
}

fn secret_config() -> LobbyConfig {
    LobbyConfig {
        secret: Some("s".into()),
        max_token_lifetime_secs: 3_600,
        ..LobbyConfig::local()
    }
}

#[test]
fn tokens_open_their_room_only_and_not_for_too_long() {
    let mut world = World::new(secret_config());
    let token = format!("token={}", mint_token(b"s", "arena", NOW + 60));
    assert!(world.admit(&with_query("/arena", &token)).is_ok());
    assert_eq!(
        world.refused(&with_query("/arena", "")),
        (Reason::MissingToken, 401)
    );
    assert_eq!(
        world.refused(&with_query("/other", &token)),
        (Reason::BadToken, 401)
    );
    let late = JoinFacts {
        now_unix: NOW + 60,
        ..with_query("/arena", &token)
    };
    assert_eq!(world.refused(&late), (Reason::ExpiredToken, 401));
    let forever = format!("token={}", mint_token(b"s", "arena", NOW + 3_601));
    let refusal = world.admit(&with_query("/arena", &forever)).unwrap_err();
    assert_eq!(
        (refusal.reason, refusal.status.as_u16()),
        (Reason::TokenLifetime, 401)
    );
    assert!(refusal.message.contains("3600 s"), "{refusal:?}");
    world.config.max_token_lifetime_secs = 0;
    assert!(world.admit(&with_query("/arena", &forever)).is_ok());
}

#[test]
fn a_player_token_seats_one_connection_at_a_time() {
    let mut world = World::new(secret_config());
    let token = format!(
        "token={}",
        mint_player_token(b"s", "arena", NOW + 60, "p1").unwrap()
    );
    let first = world.join(&with_query("/arena", &token), 1);
    assert_eq!(first.nonce.as_deref(), Some("p1"));
    assert_eq!(
        world.refused(&with_query("/arena", &token)),
        (Reason::TokenInUse, 409)
    );
    let other = format!(
        "token={}",
        mint_player_token(b"s", "arena", NOW + 60, "p2").unwrap()
    );
    world.join(&with_query("/arena", &other), 2);
    world.rooms.leave(uuid::Uuid::from_u128(1));
    world.leases.release(uuid::Uuid::from_u128(1));
    world.join(&with_query("/arena", &token), 3);

    world.config.require_token_nonce = true;
    let room_token = format!("token={}", mint_token(b"s", "arena", NOW + 60));
    assert_eq!(
        world.refused(&with_query("/arena", &room_token)),
        (Reason::TokenNonceRequired, 401)
    );
}

#[test]
fn a_full_room_is_a_conflict() {
    let mut world = World::new(LobbyConfig {
        room_capacity: 1,
        ..LobbyConfig::local()
    });
    world.join(&facts("/solo"), 1);
    let refusal = world.admit(&facts("/solo")).unwrap_err();
    assert_eq!(
        (refusal.reason, refusal.status.as_u16()),
        (Reason::RoomFull, 409)
    );
    assert!(refusal.message.contains("full (1 peers)"), "{refusal:?}");
}

#[test]
fn joins_are_rate_limited_per_address_and_per_mesh_room() {
    let mut world = World::new(LobbyConfig {
        join_burst_per_ip: 3,
        join_rate_per_ip: 1.0,
        join_burst_per_room: 2,
        join_rate_per_room: 1.0,
        ..LobbyConfig::local()
    });
    let start = facts("/busy");
    world.join(&start, 1);
    world.join(&start, 2);
    assert_eq!(world.refused(&start), (Reason::JoinRateRoom, 429));
    assert_eq!(
        world.refused(&facts("/elsewhere")),
        (Reason::JoinRateAddress, 429),
        "three attempts from one address, admitted or not"
    );
    let other = JoinFacts {
        address: IpAddr::from([192, 0, 2, 1]),
        ..facts("/elsewhere")
    };
    world.join(&other, 3);
    let matchmaking = JoinFacts {
        address: IpAddr::from([192, 0, 2, 2]),
        ..with_query("/busy", "next=2")
    };
    world.join(&matchmaking, 4);
    world.join(&matchmaking, 5);
    world.join(&matchmaking, 6);
    let later = JoinFacts {
        now: start.now + Duration::from_secs(1),
        ..start
    };
    world.join(&later, 7);
}

#[test]
fn sixteen_players_join_one_room_at_once_by_default() {
    let mut world = World::new(LobbyConfig::local());
    for n in 0..16 {
        world.join(&facts("/full-house"), n);
    }
}

#[test]
fn admin_endpoints_need_an_admin_token_when_a_secret_is_set() {
    let open = LobbyConfig::local();
    assert!(admit_admin(&open, None, "", NOW).is_ok());
    let config = secret_config();
    let admin = mint_token(b"s", ADMIN_SCOPE, NOW + 86_400 * 365);
    assert!(admit_admin(&config, Some(&format!("Bearer {admin}")), "", NOW).is_ok());
    assert!(admit_admin(&config, Some(&format!("bearer  {admin}")), "", NOW).is_ok());
    assert!(admit_admin(&config, None, &format!("prefix=x&token={admin}"), NOW).is_ok());
    let status = |auth: Option<&str>, query: &str| {
        let refusal = admit_admin(&config, auth, query, NOW).unwrap_err();
        (refusal.reason, refusal.status.as_u16())
    };
    assert_eq!(status(None, ""), (Reason::AdminUnauthorized, 401));
    assert_eq!(
        status(Some("Basic abc"), ""),
        (Reason::AdminUnauthorized, 401)
    );
    let room_token = mint_token(b"s", "arena", NOW + 60);
    assert_eq!(
        status(Some(&format!("Bearer {room_token}")), ""),
        (Reason::AdminForbidden, 403),
        "a join token is not an admin token"
    );
    assert_eq!(status(None, "token=garbage"), (Reason::AdminForbidden, 403));
}

fn turn_facts<'a>(room_path: &'a str, query: &'a str) -> TurnFacts<'a> {
    TurnFacts {
        room_path,
        query,
        authorization: None,
        origin: None,
        now_unix: NOW,
    }
}

fn turn_refused(config: &LobbyConfig, facts: &TurnFacts<'_>) -> (Reason, u16) {
    let refusal = admit_turn(config, facts).expect_err("refused");
    (refusal.reason, refusal.status.as_u16())
}

#[test]
fn turn_credentials_are_open_without_a_secret() {
    let open = LobbyConfig::local();
    let user = |path, query| admit_turn(&open, &turn_facts(path, query)).map(|grant| grant.user);
    assert_eq!(user("", ""), Ok("player".to_owned()));
    assert_eq!(user("/arena", "user=alice"), Ok("alice".to_owned()));
    assert_eq!(
        turn_refused(&open, &turn_facts("", "user=a%3Ab")),
        (Reason::BadTurnUser, 400),
        "a ':' in the user would move coturn's separator"
    );
    assert_eq!(
        turn_refused(&open, &turn_facts("/a/b", "")),
        (Reason::BadRoom, 400)
    );
    let only_game = LobbyConfig {
        allowed_origins: vec!["https://game.example".into()],
        ..LobbyConfig::local()
    };
    let evil = TurnFacts {
        origin: Some("https://evil.example"),
        ..turn_facts("", "")
    };
    assert_eq!(
        turn_refused(&only_game, &evil),
        (Reason::OriginNotAllowed, 403)
    );
}

#[test]
fn with_a_secret_turn_credentials_need_what_would_join_the_room() {
    let config = secret_config();
    let player = mint_player_token(b"s", "arena", NOW + 60, "p-7").unwrap();
    let grant = |facts: &TurnFacts<'_>| admit_turn(&config, facts).map(|grant| grant.user);
    let query = format!("token={player}&user=someone-else");
    assert_eq!(
        grant(&turn_facts("/arena", &query)),
        Ok("p-7".to_owned()),
        "a player token's nonce names the user, whatever ?user= says"
    );
    let bearer = format!("Bearer {player}");
    let by_header = TurnFacts {
        authorization: Some(&bearer),
        ..turn_facts("/arena", "")
    };
    assert_eq!(grant(&by_header), Ok("p-7".to_owned()));
    let room_token = format!("token={}", mint_token(b"s", "arena", NOW + 60));
    assert_eq!(
        grant(&turn_facts("/arena", &format!("{room_token}&user=bob"))),
        Ok("bob".to_owned())
    );

    assert_eq!(
        turn_refused(&config, &turn_facts("/arena", "")),
        (Reason::TurnUnauthorized, 401)
    );
    let refusal = admit_turn(&config, &turn_facts("/other", &query)).unwrap_err();
    assert_eq!(
        (refusal.reason, refusal.status.as_u16()),
        (Reason::TurnForbidden, 403),
        "another room's token"
    );
    assert!(
        refusal.message.contains("does not match this room"),
        "the refusal says why: {refusal:?}"
    );
    let expired = TurnFacts {
        now_unix: NOW + 60,
        ..turn_facts("/arena", &query)
    };
    assert_eq!(
        turn_refused(&config, &expired),
        (Reason::TurnForbidden, 403)
    );
    let admin = format!("token={}", mint_token(b"s", ADMIN_SCOPE, NOW + 60));
    assert_eq!(
        turn_refused(&config, &turn_facts("", &admin)),
        (Reason::TurnForbidden, 403),
        "an admin token opens no room"
    );
    let forever = format!("token={}", mint_token(b"s", "arena", NOW + 3_601));
    assert_eq!(
        turn_refused(&config, &turn_facts("/arena", &forever)),
        (Reason::TurnForbidden, 403),
        "the lobby's lifetime limit holds here too"
    );
    let players_only = LobbyConfig {
        require_token_nonce: true,
        ..secret_config()
    };
    assert_eq!(
        turn_refused(&players_only, &turn_facts("/arena", &room_token)),
        (Reason::TurnForbidden, 403),
        "--require-token-nonce holds here too"
    );
}

#[test]
fn a_seated_player_still_gets_turn_credentials() {
    let mut world = World::new(secret_config());
    let token = format!(
        "token={}",
        mint_player_token(b"s", "arena", NOW + 60, "p1").unwrap()
    );
    world.join(&with_query("/arena", &token), 1);
    assert_eq!(
        world.refused(&with_query("/arena", &token)),
        (Reason::TokenInUse, 409)
    );
    assert_eq!(
        admit_turn(&world.config, &turn_facts("/arena", &token)).map(|grant| grant.user),
        Ok("p1".to_owned()),
        "the player holding the token is the one asking"
    );
}
