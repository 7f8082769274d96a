//! API tokens (SPEC 4.1): HS256 JWTs signed with the deployment secret, their claims, and the
//! secret itself (configured, or generated once into the data directory).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use serde::{Deserialize, Serialize};
use unify_storage::Id;

use crate::config::Config;

/// `aud` of API tokens.
pub const API_AUDIENCE: &str = "unify-api";
/// `aud` of platform tokens (`POST /api/v1/platform/token`).
pub const PLATFORM_AUDIENCE: &str = "platform";
/// Clock skew tolerated on `exp` and `iat`.
const LEEWAY_S: u64 = 30;
/// The longest lifetime `unify token` issues (ten years).
const MAX_TTL_S: u64 = 10 * 365 * 86400;
/// Name of the generated secret in the data directory.
const SECRET_FILE: &str = "jwt_secret";

/// What a token lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Creates accounts.
    Root,
    /// Uses every org of its account and the Admin Center.
    Admin,
    /// Uses the orgs of its account listed in `org_ids`.
    Agent,
}

/// Claims of an API token. `exp`, `iat`, `aud`, `iss` and `sub` are required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub org_ids: Vec<Id>,
    pub iat: u64,
    pub exp: u64,
    pub aud: String,
    pub iss: String,
}

/// Claims of a platform token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformClaims {
    pub sub: String,
    pub org_id: Id,
    pub account_id: Id,
    pub iat: u64,
    pub exp: u64,
    pub aud: String,
    pub iss: String,
}

/// Why a token was refused (all answered `401 UNAUTHENTICATED`).
#[derive(Debug, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct TokenError(String);

/// Signs and checks tokens with the deployment secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    validation: Validation,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    pub fn new(secret: &[u8], issuer: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = LEEWAY_S;
        validation.set_audience(&[API_AUDIENCE]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
        validation.validate_exp = true;
        // `nbf` is checked when a token carries it (with the same leeway); it is not required.
        validation.validate_nbf = true;
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer: issuer.to_owned(),
            validation,
        }
    }

    /// Builds the signer from the configuration, creating the secret file if needed.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let secret = match &config.auth.jwt_secret {
            Some(secret) if secret.trim().is_empty() => {
                anyhow::bail!("auth.jwt_secret must not be empty")
            }
            Some(secret) => secret.as_bytes().to_vec(),
            None => load_or_create_secret(&config.data_dir)?,
        };
        Ok(Tokens::new(&secret, &config.auth.issuer))
    }

    /// Returns the claims of a valid API token.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| TokenError(e.to_string()))?;
        let claims = data.claims;
        if claims.iat > now_s() + LEEWAY_S {
            return Err(TokenError("issued in the future".into()));
        }
        if claims.role != Role::Root && claims.account_id.is_none() {
            return Err(TokenError("admin and agent tokens need account_id".into()));
        }
        Ok(claims)
    }

    /// Returns a signed API token.
    pub fn issue(
        &self,
        sub: &str,
        role: Role,
        account_id: Option<Id>,
        org_ids: Vec<Id>,
        ttl_s: u64,
    ) -> anyhow::Result<String> {
        let iat = now_s();
        let claims = Claims {
            sub: sub.to_owned(),
            role,
            account_id,
            org_ids,
            iat,
            exp: iat.saturating_add(ttl_s),
            aud: API_AUDIENCE.to_owned(),
            iss: self.issuer.clone(),
        };
        self.sign(&claims)
    }

    /// Returns a signed platform token for one org.
    pub fn issue_platform(
        &self,
        sub: &str,
        account_id: Id,
        org_id: Id,
        ttl_s: u64,
    ) -> anyhow::Result<String> {
        let iat = now_s();
        let claims = PlatformClaims {
            sub: sub.to_owned(),
            org_id,
            account_id,
            iat,
            exp: iat.saturating_add(ttl_s),
            aud: PLATFORM_AUDIENCE.to_owned(),
            iss: self.issuer.clone(),
        };
        self.sign(&claims)
    }

    fn sign(&self, claims: &impl Serialize) -> anyhow::Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .context("cannot sign a token")
    }
}

/// Reads the generated secret of the data directory, generating it on first use.
fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let path = data_dir.join(SECRET_FILE);
    let secret: String = {
        let mut rng = rand::rng();
        (0..32)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect()
    };
    // Written to a private file first and then linked into place: the link is atomic and
    // never replaces an existing secret, so a crash cannot leave an empty secret behind and
    // two processes starting at once agree on one secret.
    let staging = data_dir.join(format!("{SECRET_FILE}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&staging, &path);
    let _ = std::fs::remove_file(&staging);
    match linked {
        Ok(()) => {
            if let Ok(dir) = std::fs::File::open(data_dir) {
                let _ = dir.sync_all();
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
    let stored = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(!stored.is_empty(), "{} is empty", path.display());
    Ok(stored)
}

/// Parses a lifetime such as `300s`, `30m`, `1h` or `2d` (a bare number is seconds).
pub fn parse_ttl(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("bad lifetime {text:?}"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => anyhow::bail!("bad lifetime unit in {text:?} (use s, m, h or d)"),
    };
    n.checked_mul(scale)
        .filter(|&s| s > 0 && s <= MAX_TTL_S)
        .with_context(|| format!("bad lifetime {text:?}"))
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let tokens = Tokens::new(b"secret", "unify");
        let t = tokens
            .issue("u", Role::Agent, Some(3), vec![5], 60)
            .unwrap();
        let claims = tokens.verify(&t).unwrap();
        assert_eq!(claims.account_id, Some(3));
        assert_eq!(claims.org_ids, vec![5]);
        let other = Tokens::new(b"other", "unify");
        assert!(other.verify(&t).is_err());
        let wrong_iss = Tokens::new(b"secret", "someone");
        assert!(wrong_iss.verify(&t).is_err());
        let platform = tokens.issue_platform("u", 3, 5, 60).unwrap();
        assert!(tokens.verify(&platform).is_err(), "platform aud is refused");
    }

    #[test]
    fn ttl_parses_units() {
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("45").unwrap(), 45);
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("200000000000000d").is_err(), "overflow");
        assert!(parse_ttl("4000d").is_err(), "beyond ten years");
    }

    #[test]
    fn the_generated_secret_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(dir.path()).unwrap();
        let b = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }
}
