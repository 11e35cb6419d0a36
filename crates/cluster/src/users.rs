//! Users, login sessions and API keys in Redis, so that what is created on one node works on
//! every node. The same rules as the single-node SQLite store (`switchboard_auth::store`):
//! Argon2id password hashes (PHC strings, checked on the caller's bounded hashing slot), login
//! session cookies and API key secrets stored as SHA-256 digests, shown once.
//!
//! Keys (`<p>` is `[cluster] key_prefix`):
//! - `<p>:user:<name>`: JSON `{hash, scopes, created_at}`; `<p>:users`: set of names.
//! - `<p>:login:<sha256(cookie)>`: the user name, expiring with the session;
//!   `<p>:user-logins:<name>`: the digests of that user's sessions (to end them with the user).
//! - `<p>:apikey:<id>`: JSON `{secret_sha256, name, scopes, created_at, revoked_at}`;
//!   `<p>:apikeys`: ids by creation time.

use crate::shared::{ClusterError, Shared};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use switchboard_auth::store::{
    new_api_key, random_token, sha256_hex, valid_username, ApiKey, StoreError, User,
};
use switchboard_auth::Scopes;

#[derive(Serialize, Deserialize)]
struct UserRecord {
    hash: String,
    scopes: String,
    created_at: u64,
}

#[derive(Serialize, Deserialize)]
struct KeyRecord {
    secret_sha256: String,
    name: String,
    scopes: String,
    created_at: u64,
    #[serde(default)]
    revoked_at: Option<u64>,
}

impl KeyRecord {
    fn public(&self, id: &str) -> ApiKey {
        ApiKey {
            id: id.to_string(),
            name: self.name.clone(),
            scopes: Scopes::parse_list(&self.scopes).unwrap_or_default(),
            created_at: self.created_at,
            revoked: self.revoked_at.is_some(),
        }
    }
}

fn backend(e: ClusterError) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("malformed {what} record in the cluster store"))
}

/// The cluster's user and API-key store.
#[derive(Clone)]
pub struct SharedUsers {
    shared: Shared,
}

impl SharedUsers {
    pub fn new(shared: Shared) -> SharedUsers {
        SharedUsers { shared }
    }

    /// Adds a user whose password is already hashed (`phc`, an Argon2id PHC string).
    pub async fn add_user(
        &self,
        username: &str,
        phc: String,
        scopes: Scopes,
        now: u64,
    ) -> Result<(), StoreError> {
        if !valid_username(username) {
            return Err(StoreError::Invalid(
                "username must be 1-64 characters of letters, digits, '.', '_', '-', '@'".into(),
            ));
        }
        let rec = serde_json::to_string(&UserRecord {
            hash: phc,
            scopes: scopes.to_list(),
            created_at: now,
        })
        .map_err(|_| corrupt("user"))?;
        let created: Option<String> = self
            .shared
            .call(
                "user_add",
                redis::cmd("SET")
                    .arg(self.shared.key(&["user", username]))
                    .arg(rec)
                    .arg("NX")
                    .clone(),
            )
            .await
            .map_err(backend)?;
        if created.is_none() {
            return Err(StoreError::Invalid(format!(
                "user {username:?} already exists"
            )));
        }
        self.shared
            .call::<()>(
                "user_add",
                redis::cmd("SADD")
                    .arg(self.shared.key(&["users"]))
                    .arg(username)
                    .clone(),
            )
            .await
            .map_err(backend)
    }

    /// Removes a user and ends their login sessions. Returns whether the user existed.
    pub async fn remove_user(&self, username: &str) -> Result<bool, StoreError> {
        let logins_key = self.shared.key(&["user-logins", username]);
        let logins: Vec<String> = self
            .shared
            .call(
                "user_remove",
                redis::cmd("SMEMBERS").arg(&logins_key).clone(),
            )
            .await
            .map_err(backend)?;
        let mut p = redis::pipe();
        p.cmd("DEL").arg(self.shared.key(&["user", username]));
        p.cmd("SREM")
            .arg(self.shared.key(&["users"]))
            .arg(username)
            .ignore();
        for sha in &logins {
            p.cmd("DEL").arg(self.shared.key(&["login", sha])).ignore();
        }
        p.cmd("DEL").arg(&logins_key).ignore();
        let (removed,): (u64,) = self.shared.call("user_remove", p).await.map_err(backend)?;
        Ok(removed > 0)
    }

    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let mut names: Vec<String> = self
            .shared
            .call(
                "user_list",
                redis::cmd("SMEMBERS")
                    .arg(self.shared.key(&["users"]))
                    .clone(),
            )
            .await
            .map_err(backend)?;
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some((_, scopes)) = self.login_record(&name).await? {
                out.push(User {
                    username: name,
                    scopes,
                });
            }
        }
        Ok(out)
    }

    /// A user's password hash and scopes, for the caller to check on its hashing slot.
    pub async fn login_record(
        &self,
        username: &str,
    ) -> Result<Option<(String, Scopes)>, StoreError> {
        if !valid_username(username) {
            return Ok(None);
        }
        let rec: Option<String> = self
            .shared
            .call(
                "user_get",
                redis::cmd("GET")
                    .arg(self.shared.key(&["user", username]))
                    .clone(),
            )
            .await
            .map_err(backend)?;
        let Some(rec) = rec else { return Ok(None) };
        let r: UserRecord = serde_json::from_str(&rec).map_err(|_| corrupt("user"))?;
        Ok(Some((
            r.hash,
            Scopes::parse_list(&r.scopes).unwrap_or_default(),
        )))
    }

    /// Creates a login session for `username`; returns the cookie value (shown once).
    pub async fn create_session(
        &self,
        username: &str,
        ttl_secs: u64,
    ) -> Result<String, StoreError> {
        let token = random_token(32);
        let sha = sha256_hex(&token);
        let logins_key = self.shared.key(&["user-logins", username]);
        let mut p = redis::pipe();
        p.cmd("SET")
            .arg(self.shared.key(&["login", &sha]))
            .arg(username)
            .arg("EX")
            .arg(ttl_secs.max(1))
            .ignore()
            .cmd("SADD")
            .arg(&logins_key)
            .arg(&sha)
            .ignore()
            .cmd("EXPIRE")
            .arg(&logins_key)
            .arg(ttl_secs.max(1))
            .ignore();
        self.shared
            .call::<()>("login_create", p)
            .await
            .map_err(backend)?;
        Ok(token)
    }

    /// The user behind a live session cookie.
    pub async fn session_user(&self, token: &str) -> Result<Option<User>, StoreError> {
        if token.len() > 128 {
            return Ok(None);
        }
        let name: Option<String> = self
            .shared
            .call(
                "login_get",
                redis::cmd("GET")
                    .arg(self.shared.key(&["login", &sha256_hex(token)]))
                    .clone(),
            )
            .await
            .map_err(backend)?;
        let Some(name) = name else { return Ok(None) };
        Ok(self.login_record(&name).await?.map(|(_, scopes)| User {
            username: name,
            scopes,
        }))
    }

    pub async fn delete_session(&self, token: &str) -> Result<(), StoreError> {
        if token.len() > 128 {
            return Ok(());
        }
        self.shared
            .call::<()>(
                "login_delete",
                redis::cmd("DEL")
                    .arg(self.shared.key(&["login", &sha256_hex(token)]))
                    .clone(),
            )
            .await
            .map_err(backend)
    }

    /// Creates an API key; returns `(id, secret)`. The secret is shown once and stored hashed.
    pub async fn create_api_key(
        &self,
        name: &str,
        scopes: Scopes,
        now: u64,
    ) -> Result<(String, String), StoreError> {
        let (id, secret) = new_api_key(name)?;
        let rec = serde_json::to_string(&KeyRecord {
            secret_sha256: sha256_hex(&secret),
            name: name.to_string(),
            scopes: scopes.to_list(),
            created_at: now,
            revoked_at: None,
        })
        .map_err(|_| corrupt("API key"))?;
        let mut p = redis::pipe();
        p.cmd("SET")
            .arg(self.shared.key(&["apikey", &id]))
            .arg(rec)
            .arg("NX")
            .ignore()
            .cmd("ZADD")
            .arg(self.shared.key(&["apikeys"]))
            .arg(now)
            .arg(&id)
            .ignore();
        self.shared
            .call::<()>("apikey_create", p)
            .await
            .map_err(backend)?;
        Ok((id, secret))
    }

    async fn key_record(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let rec: Option<String> = self
            .shared
            .call(
                "apikey_get",
                redis::cmd("GET")
                    .arg(self.shared.key(&["apikey", id]))
                    .clone(),
            )
            .await
            .map_err(backend)?;
        rec.map(|r| serde_json::from_str(&r).map_err(|_| corrupt("API key")))
            .transpose()
    }

    /// Revokes a key. Returns whether a live key was revoked.
    pub async fn revoke_api_key(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        if id.len() > 64 {
            return Ok(false);
        }
        let Some(mut rec) = self.key_record(id).await? else {
            return Ok(false);
        };
        if rec.revoked_at.is_some() {
            return Ok(false);
        }
        rec.revoked_at = Some(now);
        let json = serde_json::to_string(&rec).map_err(|_| corrupt("API key"))?;
        self.shared
            .call::<()>(
                "apikey_revoke",
                redis::cmd("SET")
                    .arg(self.shared.key(&["apikey", id]))
                    .arg(json)
                    .arg("XX")
                    .clone(),
            )
            .await
            .map_err(backend)?;
        Ok(true)
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let ids: Vec<String> = self
            .shared
            .call(
                "apikey_list",
                redis::cmd("ZRANGE")
                    .arg(self.shared.key(&["apikeys"]))
                    .arg(0)
                    .arg(-1)
                    .clone(),
            )
            .await
            .map_err(backend)?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(rec) = self.key_record(&id).await? {
                out.push(rec.public(&id));
            }
        }
        Ok(out)
    }

    /// Checks an API key's secret (constant-time digest comparison). Revoked keys fail.
    pub async fn verify_api_key(
        &self,
        id: &str,
        secret: &str,
    ) -> Result<Option<ApiKey>, StoreError> {
        if id.len() > 64 || secret.len() > 128 {
            return Ok(None);
        }
        let Some(rec) = self.key_record(id).await? else {
            return Ok(None);
        };
        let presented = sha256_hex(secret);
        let same: bool = presented
            .as_bytes()
            .ct_eq(rec.secret_sha256.as_bytes())
            .into();
        Ok((same && rec.revoked_at.is_none()).then(|| rec.public(id)))
    }
}
