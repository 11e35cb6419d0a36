//! Where users, login sessions and API keys live: the node's SQLite file (`[auth] database`),
//! or, in multi-node mode, the cluster's Redis (so a user or key created on one node works on
//! every node). Handlers and CLI commands call this, not either store.
//!
//! Password checks run on the caller's hashing slot either way (Argon2id, bounded memory), and
//! unknown users are checked against a decoy hash, so they cost the same.

use std::sync::Arc;
use switchboard_auth::hashing::decoy_hash;
use switchboard_auth::store::{new_password_hash, ApiKey, Store, StoreError, User};
use switchboard_auth::{HashSlot, Scopes};
use switchboard_cluster::SharedUsers;

/// The user store in use.
#[derive(Clone)]
pub enum Users {
    /// One node: SQLite.
    Local(Arc<Store>),
    /// Several nodes: the cluster's Redis.
    Shared(Box<SharedUsers>),
}

/// Runs a SQLite call on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| StoreError::Backend("the store's worker thread panicked".into()))?
}

impl Users {
    /// Checks a password on `slot` (held until the check is done, even if the caller goes).
    pub async fn verify_login(
        &self,
        mut slot: HashSlot,
        username: String,
        password: String,
    ) -> Result<Option<User>, StoreError> {
        match self {
            Users::Local(store) => {
                let store = store.clone();
                blocking(move || store.verify_login(&mut slot, &username, &password)).await
            }
            Users::Shared(shared) => {
                let record = shared.login_record(&username).await?;
                blocking(move || {
                    let (hash, scopes) = match &record {
                        Some((hash, scopes)) => (hash.clone(), Some(*scopes)),
                        None => (decoy_hash(), None),
                    };
                    let ok = slot.verify(password.as_bytes(), &hash).unwrap_or(false);
                    Ok(scopes
                        .filter(|_| ok)
                        .map(|scopes| User { username, scopes }))
                })
                .await
            }
        }
    }

    pub async fn create_session(
        &self,
        username: String,
        ttl_secs: u64,
        now: u64,
    ) -> Result<String, StoreError> {
        match self {
            Users::Local(store) => {
                let store = store.clone();
                blocking(move || store.create_session(&username, ttl_secs, now)).await
            }
            Users::Shared(shared) => shared.create_session(&username, ttl_secs).await,
        }
    }

    pub async fn session_user(&self, token: String, now: u64) -> Result<Option<User>, StoreError> {
        match self {
            Users::Local(store) => {
                let store = store.clone();
                blocking(move || store.session_user(&token, now)).await
            }
            Users::Shared(shared) => shared.session_user(&token).await,
        }
    }

    pub async fn delete_session(&self, token: String) -> Result<(), StoreError> {
        match self {
            Users::Local(store) => {
                let store = store.clone();
                blocking(move || store.delete_session(&token)).await
            }
            Users::Shared(shared) => shared.delete_session(&token).await,
        }
    }

    pub async fn verify_api_key(
        &self,
        id: String,
        secret: String,
    ) -> Result<Option<ApiKey>, StoreError> {
        match self {
            Users::Local(store) => {
                let store = store.clone();
                blocking(move || store.verify_api_key(&id, &secret)).await
            }
            Users::Shared(shared) => shared.verify_api_key(&id, &secret).await,
        }
    }

    pub async fn add_user(
        &self,
        username: String,
        password: String,
        scopes: Scopes,
        now: u64,
    ) -> Result<(), StoreError> {
        match self {
            Users::Local(store) => {
                let store = store.clone();
                blocking(move || store.add_user(&username, &password, scopes, now)).await
            }
            Users::Shared(shared) => {
                let phc = blocking(move || new_password_hash(&password)).await?;
                shared.add_user(&username, phc, scopes, now).await
            }
        }
    }

    pub async fn remove_user(&self, username: String) -> Result<bool, StoreError> {
        match self {
            Users::Local(store) => {
                let store = store.clone();
                blocking(move || store.remove_user(&username)).await
            }
            Users::Shared(shared) => shared.remove_user(&username).await,
        }
    }

    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        match self {
            Users::Local(store) => {
                let store = store.clone();
                blocking(move || store.list_users()).await
            }
            Users::Shared(shared) => shared.list_users().await,
        }
    }

    pub async fn create_api_key(
        &self,
        name: String,
        scopes: Scopes,
        now: u64,
    ) -> Result<(String, String), StoreError> {
        match self {
            Users::Local(store) => {
                let store = store.clone();
                blocking(move || store.create_api_key(&name, scopes, now)).await
            }
            Users::Shared(shared) => shared.create_api_key(&name, scopes, now).await,
        }
    }

    pub async fn revoke_api_key(&self, id: String, now: u64) -> Result<bool, StoreError> {
        match self {
            Users::Local(store) => {
                let store = store.clone();
                blocking(move || store.revoke_api_key(&id, now)).await
            }
            Users::Shared(shared) => shared.revoke_api_key(&id, now).await,
        }
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        match self {
            Users::Local(store) => {
                let store = store.clone();
                blocking(move || store.list_api_keys()).await
            }
            Users::Shared(shared) => shared.list_api_keys().await,
        }
    }
}
