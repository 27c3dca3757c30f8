//! The Rust crate `spiffe` (crates.io) against a real lanyard-agent (issue 12).
//!
//!     lanyard-interop-rust SOCKET_PATH EXPECTED_SPIFFE_ID
//!
//! Fetches the X.509-SVID, the X.509 bundles (once and the first message of
//! the stream), the JWT bundles' stream, a JWT-SVID for two audiences,
//! the JWT bundles; validates the token through the agent and locally
//! (JwtSvid::parse_and_validate with the fetched bundles), and checks that a
//! third audience is refused both ways. Prints `ok WHAT` or `FAIL WHAT (why)`
//! per check; exits 1 on any failure, 2 on usage.

use futures::StreamExt;
use spiffe::{JwtSvid, SpiffeId, WorkloadApiClient};

struct Checks {
    failed: usize,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str, why: impl std::fmt::Display) {
        if ok {
            println!("ok   {what}");
        } else {
            println!("FAIL {what} ({why})");
            self.failed += 1;
        }
    }
}

async fn run(socket: &str, expected: &SpiffeId, c: &mut Checks) -> Result<(), String> {
    let client = WorkloadApiClient::connect_to(format!("unix://{socket}"))
        .await
        .map_err(|e| format!("connect: {e}"))?;

    let svid = client.fetch_x509_svid().await.map_err(|e| format!("fetch_x509_svid: {e}"))?;
    c.check(svid.spiffe_id() == expected, "X.509-SVID fetched, the expected SPIFFE ID", svid.spiffe_id());
    c.check(!svid.cert_chain().is_empty(), "X.509-SVID has a certificate chain", "empty chain");

    let ctx = client.fetch_x509_context().await.map_err(|e| format!("fetch_x509_context: {e}"))?;
    let td = expected.trust_domain();
    let own = ctx.bundle_set().get(&td).map(|b| b.authorities().len()).unwrap_or(0);
    c.check(own >= 1, "X.509 context: the trust domain's bundle has authorities", own);

    let bundles = client.fetch_x509_bundles().await.map_err(|e| format!("fetch_x509_bundles: {e}"))?;
    c.check(bundles.get(&td).is_some(), "FetchX509Bundles holds the trust domain", bundles.len());

    // The bundle watches: the first message of each stream at once.
    let mut xs = client.stream_x509_bundles().await.map_err(|e| format!("stream_x509_bundles: {e}"))?;
    let first = xs.next().await;
    c.check(
        matches!(&first, Some(Ok(set)) if set.get(&td).is_some()),
        "FetchX509Bundles stream: first message holds the trust domain",
        format!("{first:?}"),
    );
    let mut js = client.stream_jwt_bundles().await.map_err(|e| format!("stream_jwt_bundles: {e}"))?;
    let first = js.next().await;
    c.check(
        matches!(&first, Some(Ok(set)) if set.get(&td).is_some()),
        "FetchJWTBundles stream: first message holds the trust domain",
        format!("{first:?}"),
    );

    let auds = ["aud-one", "aud-two"];
    let jwt = client
        .fetch_jwt_svid(auds, None)
        .await
        .map_err(|e| format!("fetch_jwt_svid: {e}"))?;
    c.check(jwt.spiffe_id() == expected, "JWT-SVID fetched for two audiences", jwt.spiffe_id());
    for aud in auds {
        let v = client.validate_jwt_token(aud, jwt.token()).await;
        c.check(
            matches!(&v, Ok(s) if s.spiffe_id() == expected),
            &format!("validated by the agent for {aud}"),
            format!("{v:?}"),
        );
    }
    let v = client.validate_jwt_token("aud-three", jwt.token()).await;
    c.check(v.is_err(), "the agent refuses the token for another audience", "accepted");

    let jwt_bundles = client.fetch_jwt_bundles().await.map_err(|e| format!("fetch_jwt_bundles: {e}"))?;
    for aud in auds {
        let v = JwtSvid::parse_and_validate(jwt.token(), &jwt_bundles, &[aud]);
        c.check(
            matches!(&v, Ok(s) if s.spiffe_id() == expected),
            &format!("validated locally with the JWT bundle for {aud}"),
            format!("{v:?}"),
        );
    }
    let v = JwtSvid::parse_and_validate(jwt.token(), &jwt_bundles, &["aud-three"]);
    c.check(v.is_err(), "local validation refuses another audience", "accepted");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("Error: usage: lanyard-interop-rust SOCKET_PATH EXPECTED_SPIFFE_ID");
        std::process::exit(2);
    }
    let expected = match SpiffeId::new(&args[2]) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("Error: bad SPIFFE ID {}: {e}", args[2]);
            std::process::exit(2);
        }
    };
    let mut c = Checks { failed: 0 };
    if let Err(e) = run(&args[1], &expected, &mut c).await {
        c.check(false, "the Workload API calls", e);
    }
    println!("{}: {} failure(s)", if c.failed == 0 { "passed" } else { "FAILED" }, c.failed);
    std::process::exit(if c.failed == 0 { 0 } else { 1 });
}
