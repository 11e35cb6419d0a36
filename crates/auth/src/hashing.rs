//! Password hashing with a bound: at most `permits` Argon2id computations at once, each on a
//! memory buffer owned by the pool and reused for every hash.
//!
//! Argon2id with the default parameters fills 19 MiB per hash. Allocating that per call through
//! `malloc` costs more than the 19 MiB: glibc raises its mmap threshold after the first large
//! free, so later buffers come from heap arenas that are not given back to the system, and a
//! burst of concurrent logins leaves the process hundreds of MiB to GiB larger for good
//! (decision 0003). Here each permit owns one buffer, allocated on first use and kept, so
//! hashing costs at most `permits` × 19 MiB of resident memory, however many requests come.
//!
//! Waiting is bounded too: a caller that finds every permit taken queues only if fewer than
//! `queue` callers already wait, and for at most `wait`; otherwise it gets [`Busy`] at once and
//! the HTTP edge answers 503 with `Retry-After`.

use argon2::password_hash::{Decimal, Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Every permit is taken and the queue is full, or the wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A stored hash that cannot be used (not a PHC string, not Argon2, bad parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHash;

struct Pool {
    permits: usize,
    sem: Arc<Semaphore>,
    /// Buffers not lent out. Never more than `permits` exist in total.
    free: Mutex<Vec<Box<[Block]>>>,
    /// Blocks of a fresh buffer: what the default parameters need.
    blocks: usize,
    queue: usize,
    wait: Duration,
    waiting: AtomicUsize,
    allocated: AtomicUsize,
    hashes: AtomicU64,
}

/// The bound on concurrent password hashing. Cheap to clone (shared).
#[derive(Clone)]
pub struct HashPool {
    pool: Arc<Pool>,
}

/// One permit to hash, with its memory. Given back to the pool when dropped; move it into
/// the thread that hashes so it is held exactly as long as the hash runs.
pub struct HashSlot {
    mem: Option<Box<[Block]>>,
    pool: Arc<Pool>,
    // Dropped after `Drop::drop` has put the buffer back, so whoever gets the permit next
    // finds a buffer and never allocates one beyond `permits`.
    _permit: OwnedSemaphorePermit,
}

impl HashPool {
    /// `permits` hashes at once (at least 1); up to `queue` callers wait up to `wait` each.
    pub fn new(permits: usize, queue: usize, wait: Duration) -> HashPool {
        let permits = permits.max(1);
        HashPool {
            pool: Arc::new(Pool {
                permits,
                sem: Arc::new(Semaphore::new(permits)),
                free: Mutex::new(Vec::with_capacity(permits)),
                blocks: Params::default().block_count(),
                queue,
                wait,
                waiting: AtomicUsize::new(0),
                allocated: AtomicUsize::new(0),
                hashes: AtomicU64::new(0),
            }),
        }
    }

    /// A slot if one is free now.
    pub fn try_acquire(&self) -> Option<HashSlot> {
        let permit = self.pool.sem.clone().try_acquire_owned().ok()?;
        Some(self.slot(permit))
    }

    /// A slot, waiting briefly if the queue has room; [`Busy`] otherwise.
    pub async fn acquire(&self) -> Result<HashSlot, Busy> {
        if let Some(s) = self.try_acquire() {
            return Ok(s);
        }
        let p = &self.pool;
        // Join the queue only if it has room; the count goes down when this call ends, however
        // it ends (the future may be dropped when the client goes away).
        if p.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < p.queue).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Busy);
        }
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _leave = Leave(&p.waiting);
        match tokio::time::timeout(p.wait, p.sem.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(self.slot(permit)),
            _ => Err(Busy),
        }
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> HashSlot {
        let mem = self.pool.free.lock().pop().unwrap_or_else(|| {
            self.pool.allocated.fetch_add(1, Ordering::Relaxed);
            new_buffer(self.pool.blocks)
        });
        HashSlot {
            mem: Some(mem),
            pool: self.pool.clone(),
            _permit: permit,
        }
    }

    /// Hashes that may run at once.
    pub fn permits(&self) -> usize {
        self.pool.permits
    }

    /// Slots lent out now.
    pub fn in_use(&self) -> usize {
        self.pool.permits - self.pool.sem.available_permits()
    }

    /// Callers waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.pool.waiting.load(Ordering::Acquire)
    }

    /// Memory buffers allocated so far (never more than [`HashPool::permits`]).
    pub fn buffers_allocated(&self) -> usize {
        self.pool.allocated.load(Ordering::Relaxed)
    }

    /// Argon2 computations run through this pool's slots so far.
    pub fn hashes(&self) -> u64 {
        self.pool.hashes.load(Ordering::Relaxed)
    }
}

fn new_buffer(blocks: usize) -> Box<[Block]> {
    vec![Block::new(); blocks].into_boxed_slice()
}

impl Drop for HashSlot {
    fn drop(&mut self) {
        if let Some(mem) = self.mem.take() {
            self.pool.free.lock().push(mem);
        }
    }
}

impl HashSlot {
    /// This slot's memory, at least `blocks` long. A stored hash with a larger memory cost
    /// than the default grows the buffer once; the larger buffer is kept for reuse.
    fn memory(&mut self, blocks: usize) -> &mut [Block] {
        let mem = self.mem.get_or_insert_with(|| new_buffer(blocks));
        if mem.len() < blocks {
            *mem = new_buffer(blocks);
        }
        &mut mem[..blocks]
    }

    /// Whether `password` matches the PHC string `phc` (any Argon2 variant, version and
    /// parameters it names). One Argon2 computation on this slot's memory; the result is
    /// compared in constant time.
    pub fn verify(&mut self, password: &[u8], phc: &str) -> Result<bool, BadHash> {
        let h = PasswordHash::new(phc).map_err(|_| BadHash)?;
        let algorithm = Algorithm::try_from(h.algorithm).map_err(|_| BadHash)?;
        let version = match h.version {
            Some(v) => Version::try_from(v).map_err(|_| BadHash)?,
            None => Version::default(),
        };
        let params = Params::try_from(&h).map_err(|_| BadHash)?;
        let salt = h.salt.ok_or(BadHash)?;
        let expected = h.hash.ok_or(BadHash)?;
        let mut salt_buf = [0u8; Salt::MAX_LENGTH];
        let salt = salt.decode_b64(&mut salt_buf).map_err(|_| BadHash)?;
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = &mut out[..expected.len()];
        self.hash_into(algorithm, version, params, password, salt, out)?;
        Ok(bool::from(out.ct_eq(expected.as_bytes())))
    }

    /// A PHC string for `password` with a fresh random salt and the default parameters (what
    /// [`argon2::Argon2::default`] writes, so either side verifies the other's strings).
    pub fn hash(&mut self, password: &[u8]) -> Result<String, BadHash> {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|_| BadHash)?;
        let mut salt_buf = [0u8; Salt::MAX_LENGTH];
        let salt_bytes = salt
            .as_salt()
            .decode_b64(&mut salt_buf)
            .map_err(|_| BadHash)?;
        let params = Params::default();
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        self.hash_into(
            Algorithm::default(),
            Version::default(),
            params.clone(),
            password,
            salt_bytes,
            &mut out,
        )?;
        phc_string(&params, salt.as_salt(), &out)
    }

    fn hash_into(
        &mut self,
        algorithm: Algorithm,
        version: Version,
        params: Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), BadHash> {
        let blocks = params.block_count();
        let argon = Argon2::new(algorithm, version, params);
        self.pool.hashes.fetch_add(1, Ordering::Relaxed);
        argon
            .hash_password_into_with_memory(password, salt, out, self.memory(blocks))
            .map_err(|_| BadHash)
    }
}

fn phc_string(params: &Params, salt: Salt<'_>, out: &[u8]) -> Result<String, BadHash> {
    let h = PasswordHash {
        algorithm: Algorithm::default().ident(),
        version: Some(Decimal::from(Version::default())),
        params: ParamsString::try_from(params).map_err(|_| BadHash)?,
        salt: Some(salt),
        hash: Some(Output::new(out).map_err(|_| BadHash)?),
    };
    Ok(h.to_string())
}

/// A PHC string with the default parameters, a random salt and a random output: checking any
/// password against it costs exactly what checking a real user's costs, and matches nothing.
/// Used for unknown usernames so they take the same time and the same slot as known ones.
pub fn decoy_hash() -> String {
    let salt =
        SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes is a valid salt");
    let out: [u8; Params::DEFAULT_OUTPUT_LEN] = rand::random();
    phc_string(&Params::default(), salt.as_salt(), &out).expect("default parameters encode")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    /// A PHC string stored by `switchboard user add` before the pool existed (its hash came
    /// from `Argon2::default().hash_password`), for the password "correct horse".
    pub(crate) const STORED: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$WKXYcdjHWhvNhxgaE+fv9Q$yTjjTZ/6XMPYWR7ssm9sFdrRnjTf/V8pKAGodyCUxok";

    #[test]
    fn verifies_hashes_written_by_the_argon2_crate_and_the_other_way_round() {
        let pool = HashPool::new(1, 0, Duration::ZERO);
        let mut slot = pool.try_acquire().unwrap();
        assert!(slot.verify(b"correct horse", STORED).unwrap());
        assert!(!slot.verify(b"correct horsf", STORED).unwrap());

        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = Argon2::default()
            .hash_password(b"hunter2hunter2", &salt)
            .unwrap()
            .to_string();
        assert!(slot.verify(b"hunter2hunter2", &theirs).unwrap());

        let ours = slot.hash(b"hunter2hunter2").unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"hunter2hunter2", &parsed)
            .is_ok());
        assert!(slot.verify(b"hunter2hunter2", &ours).unwrap());
        assert!(slot.verify(b"x", &ours).is_ok_and(|ok| !ok));

        assert_eq!(slot.verify(b"x", "not a hash"), Err(BadHash));
        assert_eq!(
            slot.verify(b"x", "$pbkdf2$i=1$c2FsdHNhbHQ$aGFzaGhhc2g"),
            Err(BadHash)
        );
        assert!(!slot.verify(b"x", &decoy_hash()).unwrap());
        assert_eq!(
            pool.buffers_allocated(),
            1,
            "every hash reused the one buffer"
        );
    }

    #[test]
    fn other_parameters_are_honoured() {
        // A smaller and a larger memory cost than the default, Argon2i, no version field.
        let pool = HashPool::new(1, 0, Duration::ZERO);
        let mut slot = pool.try_acquire().unwrap();
        for (alg, m) in [(Algorithm::Argon2id, 64), (Algorithm::Argon2i, 20 * 1024)] {
            let params = Params::new(m, 1, 1, None).unwrap();
            let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
            let phc = Argon2::new(alg, Version::V0x13, params)
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string();
            assert!(slot.verify(b"pw", &phc).unwrap(), "{phc}");
            assert!(!slot.verify(b"pv", &phc).unwrap(), "{phc}");
        }
        let unversioned = STORED.replace("$v=19", "");
        assert!(slot.verify(b"correct horse", &unversioned).unwrap());
    }

    #[test]
    fn bounded_slots_and_buffers() {
        let pool = HashPool::new(2, 0, Duration::ZERO);
        let a = pool.try_acquire().unwrap();
        let b = pool.try_acquire().unwrap();
        assert!(pool.try_acquire().is_none());
        assert_eq!(pool.in_use(), 2);
        drop(a);
        let c = pool.try_acquire().unwrap();
        drop((b, c));
        for _ in 0..10 {
            let _s = pool.try_acquire().unwrap();
        }
        assert_eq!(pool.buffers_allocated(), 2);
        assert_eq!(pool.in_use(), 0);
    }

    /// A task that asks `pool` for a slot, returned once it waits in the queue; it yields
    /// what its `acquire` gave.
    async fn queued_waiter(pool: &HashPool) -> tokio::task::JoinHandle<Result<(), Busy>> {
        let queued = pool.clone();
        let waiter = tokio::spawn(async move { queued.acquire().await.map(|_| ()) });
        while pool.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        waiter
    }

    #[tokio::test]
    async fn the_queue_is_bounded_and_waits_briefly() {
        let pool = HashPool::new(1, 1, Duration::from_millis(50));
        let held = pool.acquire().await.unwrap();
        // One caller may wait; it gives up after `wait`.
        let waiter = queued_waiter(&pool).await;
        // The queue is full: the next caller is refused without waiting.
        assert_eq!(pool.acquire().await.err(), Some(Busy));
        assert_eq!(waiter.await.unwrap(), Err(Busy));
        assert_eq!(pool.waiting(), 0);
        drop(held);

        // A waiter is served when a slot comes back within its wait (10 s: far longer than
        // this test needs, so a loaded machine cannot make it time out).
        let pool = HashPool::new(1, 1, Duration::from_secs(10));
        let held = pool.acquire().await.unwrap();
        let waiter = queued_waiter(&pool).await;
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!((pool.waiting(), pool.in_use()), (0, 0));
    }
}
