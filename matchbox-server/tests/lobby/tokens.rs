//! Player tokens (`<expiry>.<nonce>.<sig>`) seat one live connection at a time, tokens that
//! live too long are refused, and a lobby can require player tokens. Room tokens keep working
//! unless it does (tests/lobby/auth.rs).

use std::time::Duration;

use crate::support::client::*;
use peersync_lobby::auth::{mint_player_token, mint_token};

#[tokio::test]
async fn a_player_token_seats_one_connection_at_a_time() {
    let lobby = lobby(|config| config.secret = Some("s3cret".into())).await;
    let token = mint_player_token(b"s3cret", "arena", now() + 60, "player-1").unwrap();
    let path = format!("/arena?token={token}");
    let (first, _) = join(&lobby, &path).await;
    let (status, body) = refused(&lobby, &path).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("in use by a live connection"), "{body}");
    let other = mint_player_token(b"s3cret", "arena", now() + 60, "player-2").unwrap();
    let (_second, _) = join(&lobby, &format!("/arena?token={other}")).await;

    // The player reconnects (matchbox makes a new connection): in once the old one is gone.
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio_tungstenite::connect_async(url(&lobby, &path))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "the nonce is freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lobby.shutdown().await;
}

#[tokio::test]
async fn tokens_living_longer_than_the_limit_are_refused() {
    let lobby = lobby(|config| {
        config.secret = Some("s3cret".into());
        config.max_token_lifetime_secs = 3_600;
    })
    .await;
    let (_ok, _) = join(
        &lobby,
        &format!(
            "/arena?token={}",
            mint_token(b"s3cret", "arena", now() + 600)
        ),
    )
    .await;
    for token in [
        mint_token(b"s3cret", "arena", now() + 7_200),
        mint_player_token(b"s3cret", "arena", now() + 7_200, "p").unwrap(),
    ] {
        let (status, body) = refused(&lobby, &format!("/arena?token={token}")).await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("more than 3600 s from now"), "{body}");
    }
    lobby.shutdown().await;
}

#[tokio::test]
async fn a_lobby_can_require_player_tokens() {
    let lobby = lobby(|config| {
        config.secret = Some("s3cret".into());
        config.require_token_nonce = true;
    })
    .await;
    let room_token = mint_token(b"s3cret", "arena", now() + 60);
    let (status, body) = refused(&lobby, &format!("/arena?token={room_token}")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("requires player tokens"), "{body}");
    let player = mint_player_token(b"s3cret", "arena", now() + 60, "p").unwrap();
    let (_ws, _) = join(&lobby, &format!("/arena?token={player}")).await;
    lobby.shutdown().await;
}
