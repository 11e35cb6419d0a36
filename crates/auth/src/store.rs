//! Who may mint tickets: users (Argon2id password hashes, login sessions) and API keys
//! (random 256-bit secrets stored as SHA-256 digests — a slow hash adds nothing for secrets of
//! that entropy and would cost every token request). One SQLite file; ":memory:" for dev/tests.
//!
//! Calls are synchronous and some are deliberately slow (Argon2id); async callers run them on a
//! blocking thread. Checking a password needs a [`HashSlot`] from the server's [`HashPool`]:
//! that bounds how many checks run at once and gives each its reused Argon2 memory.

#[cfg(doc)]
use crate::hashing::HashPool;
use crate::hashing::{decoy_hash, HashSlot};
use crate::jwt::Scopes;
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("cannot open database {path:?}: {message}")]
    Open { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("password hashing failed")]
    Hash,
    /// The shared store of a multi-node deployment failed (Redis unreachable, bad data).
    #[error("{0}")]
    Backend(String),
}

/// A user of the built-in store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub username: String,
    /// Scopes this user may put into tickets it mints.
    pub scopes: Scopes,
}

/// An API key's public part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scopes: Scopes,
    pub created_at: u64,
    pub revoked: bool,
}

pub struct Store {
    conn: Mutex<Connection>,
    /// A hash with the default parameters that matches no password, checked when a user does
    /// not exist so that unknown and known usernames take the same time and the same slot.
    decoy_hash: String,
}

/// Creates the database file readable and writable by its owner only (0600), unless it exists.
/// SQLite gives its `-wal` and `-shm` files the database file's permissions.
fn create_private(path: &str) -> std::io::Result<()> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Hex SHA-256 of `s`: how session cookies and API key secrets are stored.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// `bytes` random bytes, base64url: session cookies, API key ids and secrets.
/// A new API key for `name` (1–128 bytes): `(id, secret)`, whatever store keeps it.
pub fn new_api_key(name: &str) -> Result<(String, String), StoreError> {
    if name.is_empty() || name.len() > 128 {
        return Err(StoreError::Invalid(
            "API key name must be 1-128 characters".into(),
        ));
    }
    Ok((format!("sbk_{}", random_token(9)), random_token(32)))
}

pub fn random_token(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(v)
}

/// An Argon2id PHC string for `password` (19 MiB of memory; call from a blocking thread).
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|_| StoreError::Hash)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| StoreError::Hash)
}

/// The stored hash for a new password, refusing one under 8 characters.
pub fn new_password_hash(password: &str) -> Result<String, StoreError> {
    if password.len() < 8 {
        return Err(StoreError::Invalid(
            "password must be at least 8 characters".into(),
        ));
    }
    hash_password(password)
}

/// 1 to 64 letters, digits, `.`, `_`, `-`, `@`.
pub fn valid_username(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

impl Store {
    /// Opens (creating if needed) the store at `path`, or in memory for ":memory:".
    pub fn open(path: &str) -> Result<Store, StoreError> {
        let conn = if path == ":memory:" {
            Connection::open_in_memory()?
        } else {
            if let Some(dir) = std::path::Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                        path: path.into(),
                        message: e.to_string(),
                    })?;
                }
            }
            create_private(path).map_err(|e| StoreError::Open {
                path: path.into(),
                message: e.to_string(),
            })?;
            Connection::open(path).map_err(|e| StoreError::Open {
                path: path.into(),
                message: e.to_string(),
            })?
        };
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS users (
                 username TEXT PRIMARY KEY,
                 password_hash TEXT NOT NULL,
                 scopes TEXT NOT NULL,
                 created_at INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS api_keys (
                 id TEXT PRIMARY KEY,
                 secret_sha256 TEXT NOT NULL,
                 name TEXT NOT NULL,
                 scopes TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 revoked_at INTEGER
             );
             CREATE TABLE IF NOT EXISTS sessions (
                 token_sha256 TEXT PRIMARY KEY,
                 username TEXT NOT NULL,
                 expires_at INTEGER NOT NULL
             );",
        )
        .map_err(|e| StoreError::Open {
            path: path.into(),
            message: e.to_string(),
        })?;
        Ok(Store {
            conn: Mutex::new(conn),
            decoy_hash: decoy_hash(),
        })
    }

    pub fn add_user(
        &self,
        username: &str,
        password: &str,
        scopes: Scopes,
        now: u64,
    ) -> Result<(), StoreError> {
        if !valid_username(username) {
            return Err(StoreError::Invalid(
                "username must be 1-64 characters of letters, digits, '.', '_', '-', '@'".into(),
            ));
        }
        let hash = new_password_hash(password)?;
        let n = self.conn.lock().execute(
            "INSERT INTO users (username, password_hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(username) DO NOTHING",
            params![username, hash, scopes.to_list(), now as i64],
        )?;
        if n == 0 {
            return Err(StoreError::Invalid(format!(
                "user {username:?} already exists"
            )));
        }
        Ok(())
    }

    /// Removes a user and their sessions. Returns whether the user existed.
    pub fn remove_user(&self, username: &str) -> Result<bool, StoreError> {
        let conn = self.conn.lock();
        conn.execute(
            "DELETE FROM sessions WHERE username = ?1",
            params![username],
        )?;
        Ok(conn.execute("DELETE FROM users WHERE username = ?1", params![username])? > 0)
    }

    pub fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let conn = self.conn.lock();
        let mut st = conn.prepare("SELECT username, scopes FROM users ORDER BY username")?;
        let rows = st.query_map([], |r| {
            Ok(User {
                username: r.get(0)?,
                scopes: Scopes::parse_list(&r.get::<_, String>(1)?).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Checks a password on `slot`'s memory. Unknown users are checked against a decoy hash,
    /// so they take the same time and the same slot as known ones. Slow (Argon2id): call from a
    /// blocking thread.
    pub fn verify_login(
        &self,
        slot: &mut HashSlot,
        username: &str,
        password: &str,
    ) -> Result<Option<User>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .lock()
            .query_row(
                "SELECT password_hash, scopes FROM users WHERE username = ?1",
                params![username],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (hash, scopes) = match &row {
            Some((hash, scopes)) => (hash.as_str(), Some(scopes)),
            None => (self.decoy_hash.as_str(), None),
        };
        let matches = slot.verify(password.as_bytes(), hash).unwrap_or(false);
        Ok(match scopes {
            Some(scopes) if matches => Some(User {
                username: username.into(),
                scopes: Scopes::parse_list(scopes).unwrap_or_default(),
            }),
            _ => None,
        })
    }

    /// Creates a login session; returns the cookie value (shown once, stored hashed).
    pub fn create_session(
        &self,
        username: &str,
        ttl_secs: u64,
        now: u64,
    ) -> Result<String, StoreError> {
        let token = random_token(32);
        let conn = self.conn.lock();
        conn.execute(
            "DELETE FROM sessions WHERE expires_at < ?1",
            params![now as i64],
        )?;
        conn.execute(
            "INSERT INTO sessions (token_sha256, username, expires_at) VALUES (?1, ?2, ?3)",
            params![sha256_hex(&token), username, (now + ttl_secs) as i64],
        )?;
        Ok(token)
    }

    /// The user behind a live session cookie.
    pub fn session_user(&self, token: &str, now: u64) -> Result<Option<User>, StoreError> {
        if token.len() > 128 {
            return Ok(None);
        }
        Ok(self
            .conn
            .lock()
            .query_row(
                "SELECT u.username, u.scopes FROM sessions s JOIN users u ON u.username = s.username
                 WHERE s.token_sha256 = ?1 AND s.expires_at >= ?2",
                params![sha256_hex(token), now as i64],
                |r| {
                    Ok(User {
                        username: r.get(0)?,
                        scopes: Scopes::parse_list(&r.get::<_, String>(1)?).unwrap_or_default(),
                    })
                },
            )
            .optional()?)
    }

    pub fn delete_session(&self, token: &str) -> Result<(), StoreError> {
        self.conn.lock().execute(
            "DELETE FROM sessions WHERE token_sha256 = ?1",
            params![sha256_hex(token)],
        )?;
        Ok(())
    }

    /// Creates an API key; returns `(id, secret)`. The secret is shown once and stored hashed.
    pub fn create_api_key(
        &self,
        name: &str,
        scopes: Scopes,
        now: u64,
    ) -> Result<(String, String), StoreError> {
        let (id, secret) = new_api_key(name)?;
        self.conn.lock().execute(
            "INSERT INTO api_keys (id, secret_sha256, name, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, sha256_hex(&secret), name, scopes.to_list(), now as i64],
        )?;
        Ok((id, secret))
    }

    /// Revokes a key. Returns whether a live key was revoked.
    pub fn revoke_api_key(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        Ok(self.conn.lock().execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now as i64],
        )? > 0)
    }

    pub fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let conn = self.conn.lock();
        let mut st = conn.prepare(
            "SELECT id, name, scopes, created_at, revoked_at IS NOT NULL FROM api_keys ORDER BY created_at, id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(ApiKey {
                id: r.get(0)?,
                name: r.get(1)?,
                scopes: Scopes::parse_list(&r.get::<_, String>(2)?).unwrap_or_default(),
                created_at: r.get::<_, i64>(3)? as u64,
                revoked: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Checks an API key's secret (constant-time digest comparison). Revoked keys fail.
    pub fn verify_api_key(&self, id: &str, secret: &str) -> Result<Option<ApiKey>, StoreError> {
        if id.len() > 64 || secret.len() > 128 {
            return Ok(None);
        }
        let row: Option<(String, ApiKey)> = self
            .conn
            .lock()
            .query_row(
                "SELECT secret_sha256, id, name, scopes, created_at, revoked_at IS NOT NULL FROM api_keys WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get(0)?,
                        ApiKey {
                            id: r.get(1)?,
                            name: r.get(2)?,
                            scopes: Scopes::parse_list(&r.get::<_, String>(3)?).unwrap_or_default(),
                            created_at: r.get::<_, i64>(4)? as u64,
                            revoked: r.get(5)?,
                        },
                    ))
                },
            )
            .optional()?;
        let presented = sha256_hex(secret);
        Ok(match row {
            Some((stored, key))
                if !key.revoked && bool::from(stored.as_bytes().ct_eq(presented.as_bytes())) =>
            {
                Some(key)
            }
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn database_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.db");
        let store = Store::open(path.to_str().unwrap()).unwrap();
        store
            .add_user("alice", "correct horse", Scopes::default(), 1)
            .unwrap();
        for f in ["users.db", "users.db-wal", "users.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}: {mode:o}");
        }
    }
    use crate::hashing::HashPool;
    use crate::jwt::Scope;

    fn slot() -> HashSlot {
        HashPool::new(1, 0, std::time::Duration::ZERO)
            .try_acquire()
            .unwrap()
    }

    /// Whether `user` logs in with `password`.
    fn logs_in(s: &Store, user: &str, password: &str) -> bool {
        s.verify_login(&mut slot(), user, password)
            .unwrap()
            .is_some()
    }

    #[test]
    fn users_login_sessions() {
        let s = Store::open(":memory:").unwrap();
        let scopes: Scopes = [Scope::Webrtc].into_iter().collect();
        s.add_user("alice", "correct horse", scopes, 0).unwrap();
        assert!(s.add_user("alice", "correct horse", scopes, 0).is_err());
        assert!(s.add_user("bad name!", "correct horse", scopes, 0).is_err());
        assert!(!logs_in(&s, "alice", "wrong password"));
        assert!(!logs_in(&s, "nobody", "whatever1"));
        let u = s
            .verify_login(&mut slot(), "alice", "correct horse")
            .unwrap()
            .unwrap();
        assert_eq!(u.scopes, scopes);
        let cookie = s.create_session("alice", 100, 1000).unwrap();
        assert_eq!(
            s.session_user(&cookie, 1050).unwrap().unwrap().username,
            "alice"
        );
        assert!(s.session_user(&cookie, 1101).unwrap().is_none(), "expired");
        assert!(s.session_user("forged", 1050).unwrap().is_none());
        assert!(s.remove_user("alice").unwrap());
        assert!(
            s.session_user(&cookie, 1050).unwrap().is_none(),
            "sessions go with the user"
        );
        assert_eq!(s.list_users().unwrap().len(), 0);
    }

    /// Known and unknown users alike run exactly one Argon2 computation on the slot they were
    /// given: an unknown user cannot get around the pool's bound, nor hash on other memory.
    #[test]
    fn unknown_and_known_users_hash_once_on_the_callers_slot() {
        let s = Store::open(":memory:").unwrap();
        s.add_user("alice", "correct horse", Scopes::all(), 0)
            .unwrap();
        let pool = HashPool::new(1, 0, std::time::Duration::ZERO);
        let mut slot = pool.try_acquire().unwrap();
        assert!(pool.try_acquire().is_none(), "the only permit is taken");
        for (user, pw, ok) in [
            ("nobody", "correct horse", false),
            ("alice", "wrong", false),
            ("alice", "correct horse", true),
            ("ghost", "", false),
        ] {
            let before = pool.hashes();
            let r = s.verify_login(&mut slot, user, pw).unwrap();
            assert_eq!(r.is_some(), ok, "{user}");
            assert_eq!(pool.hashes(), before + 1, "{user}: one hash on the slot");
        }
        assert_eq!(pool.buffers_allocated(), 1);
        drop(slot);
        assert!(pool.try_acquire().is_some());
    }

    /// A user added before the pool existed (PHC string from `Argon2::default()`) still logs
    /// in, and users added now are written in the same format.
    #[test]
    fn stored_hashes_stay_compatible() {
        let s = Store::open(":memory:").unwrap();
        s.add_user("alice", "correct horse", Scopes::all(), 0)
            .unwrap();
        let stored: String = s
            .conn
            .lock()
            .query_row(
                "SELECT password_hash FROM users WHERE username = 'alice'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        let old = crate::hashing::tests::STORED;
        s.conn
            .lock()
            .execute(
                "INSERT INTO users (username, password_hash, scopes, created_at) VALUES ('old', ?1, 'webrtc', 0)",
                params![old],
            )
            .unwrap();
        assert!(logs_in(&s, "old", "correct horse"));
        assert!(logs_in(&s, "alice", "correct horse"));
    }

    #[test]
    fn api_keys_create_verify_revoke() {
        let s = Store::open(":memory:").unwrap();
        let (id, secret) = s.create_api_key("backend", Scopes::all(), 5).unwrap();
        assert_eq!(
            s.verify_api_key(&id, &secret).unwrap().unwrap().name,
            "backend"
        );
        assert!(s.verify_api_key(&id, "nope").unwrap().is_none());
        assert!(s.revoke_api_key(&id, 6).unwrap());
        assert!(s.verify_api_key(&id, &secret).unwrap().is_none());
        assert!(s.list_api_keys().unwrap()[0].revoked);
    }
}
