//! The auth store, as etcd keeps it: whether auth is enabled, its revision,
//! users (with bcrypt hashes made by gatewayd) and roles with their key
//! permissions. It lives in the `auth` keyspace, changes only through
//! applied raft entries (so every member holds the same), and is read from
//! an in-memory copy that is swapped in after each committed batch.
//!
//! `auth` keyspace: `enabled` → [0|1], `revision` → u64 BE,
//! `user/<name>` → authpb.User, `role/<name>` → authpb.Role.
//!
//! Simple tokens are kept in memory only, as etcd does: registered on every
//! member by the applied Authenticate entry, dropped after `ttl` unused, and
//! lost when storaged restarts (clients re-authenticate).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fjall::Readable;
use prost::Message;

use crate::store::Keyspaces;
use crate::StoreError;
use common::errors::EtcdError;
use common::proto::authpb::{Permission, Role, User, UserAddOptions};
use common::proto::etcdserverpb::{
    AuthRoleGetResponse, AuthRoleListResponse, AuthStatusResponse, AuthUserGetResponse,
    AuthUserListResponse, ResponseHeader,
};
use common::proto::storage::auth_change::Op as Change;
use common::proto::storage::auth_query_request::Query;
use common::proto::storage::auth_query_response::Answer;
use common::proto::storage::{AuthChange, SimpleToken};

pub const ROOT: &str = "root";
const ENABLED: &[u8] = b"enabled";
const REVISION: &[u8] = b"revision";
const USER: &[u8] = b"user/";
const ROLE: &[u8] = b"role/";

/// The auth store's content at one applied index.
#[derive(Clone, Debug, Default)]
pub struct AuthState {
    pub enabled: bool,
    /// Bumped by every change, as etcd's authRevision (1 on a fresh store).
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

fn key(prefix: &[u8], name: &str) -> Vec<u8> {
    [prefix, name.as_bytes()].concat()
}

impl AuthState {
    pub fn load<R: Readable>(r: &R, ks: &Keyspaces) -> Result<AuthState, StoreError> {
        let mut s = AuthState {
            revision: 1,
            ..Default::default()
        };
        for g in r.iter(&ks.auth) {
            let (k, v) = g.into_inner()?;
            let k = k.as_ref();
            if k == ENABLED {
                s.enabled = v.as_ref() == [1];
            } else if k == REVISION {
                s.revision =
                    u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::CorruptKey)?);
            } else if let Some(name) = k.strip_prefix(USER) {
                s.users.insert(utf8(name)?, User::decode(v.as_ref())?);
            } else if let Some(name) = k.strip_prefix(ROLE) {
                s.roles.insert(utf8(name)?, Role::decode(v.as_ref())?);
            }
        }
        Ok(s)
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Whether `user` holds the root role (etcd's administrator).
    pub fn is_root(&self, user: &User) -> bool {
        user.roles.iter().any(|r| r == ROOT)
    }

    /// etcd's IsAdminPermitted.
    pub fn check_admin(&self, who: &str) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        if who.is_empty() {
            return Err(EtcdError::UserEmpty);
        }
        let user = self.user(who).ok_or(EtcdError::UserNotFound)?;
        if self.is_root(user) {
            Ok(())
        } else {
            Err(EtcdError::PermissionDenied)
        }
    }

    /// Whether `who` holds `role` (a non-admin may read its own roles).
    pub fn has_role(&self, who: &str, role: &str) -> bool {
        self.user(who)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }
}

fn utf8(b: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(b.to_vec()).map_err(|_| StoreError::CorruptKey)
}

/// The auth store of a running storaged: the committed state and the
/// simple tokens.
pub struct Auth {
    state: RwLock<Arc<AuthState>>,
    tokens: Mutex<HashMap<String, TokenEntry>>,
}

struct TokenEntry {
    user: String,
    ttl: Duration,
    expires: Instant,
}

impl Auth {
    pub fn new(state: AuthState) -> Auth {
        Auth {
            state: RwLock::new(Arc::new(state)),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The committed state (cheap: shared).
    pub fn state(&self) -> Arc<AuthState> {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swap in a batch's state once its commit is visible.
    pub fn publish(&self, state: Arc<AuthState>) {
        match self.state.write() {
            Ok(mut s) => *s = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, TokenEntry>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user a simple token stands for (its TTL starts again), or None.
    pub fn resolve(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let digest = common::secrets::digest(token.as_bytes());
        let mut tokens = self.tokens();
        match tokens.get_mut(&digest) {
            Some(t) if t.expires > now => {
                t.expires = now + t.ttl;
                Some(t.user.clone())
            }
            Some(_) => {
                tokens.remove(&digest);
                None
            }
            None => None,
        }
    }

    /// Registers a token by its digest (as applied from the log).
    fn register(&self, t: &SimpleToken) {
        let now = Instant::now();
        let ttl = Duration::from_secs(t.ttl_seconds.max(1) as u64);
        let mut tokens = self.tokens();
        tokens.retain(|_, e| e.expires > now);
        tokens.insert(
            t.token.clone(),
            TokenEntry {
                user: t.user.clone(),
                ttl,
                expires: now + ttl,
            },
        );
    }

    fn invalidate_user(&self, user: &str) {
        self.tokens().retain(|_, e| e.user != user);
    }

    fn invalidate_all(&self) {
        self.tokens().clear();
    }
}

/// Applies auth changes inside one batch's write transaction.
pub struct Changer<'a, 'b> {
    pub tx: &'a mut fjall::SingleWriterWriteTx<'b>,
    pub ks: &'a Keyspaces,
    pub state: &'a mut Arc<AuthState>,
    pub auth: &'a Auth,
}

impl Changer<'_, '_> {
    /// Apply one change as etcd's auth store does; `who` made it (None:
    /// the member itself). Returns the new auth revision.
    pub fn apply(&mut self, change: &AuthChange, who: Option<&str>) -> Result<u64, EtcdError> {
        let Some(op) = &change.op else {
            return Err(EtcdError::NotCapable);
        };
        if !matches!(op, Change::Authenticate(_)) {
            if let Some(who) = who {
                self.state.check_admin(who)?;
            }
        }
        let s = Arc::make_mut(self.state);
        match op {
            Change::Enable(_) => {
                if s.enabled {
                    return Ok(s.revision);
                }
                let root = s.user(ROOT).ok_or(EtcdError::RootUserNotExist)?;
                if !s.is_root(root) {
                    return Err(EtcdError::RootRoleNotExist);
                }
                s.enabled = true;
                self.tx.insert(&self.ks.auth, ENABLED, [1u8]);
            }
            Change::Disable(_) => {
                if !s.enabled {
                    return Ok(s.revision);
                }
                s.enabled = false;
                self.tx.insert(&self.ks.auth, ENABLED, [0u8]);
                self.auth.invalidate_all();
            }
            Change::UserAdd(r) => {
                if r.name.is_empty() {
                    return Err(EtcdError::UserEmpty);
                }
                if s.users.contains_key(&r.name) {
                    return Err(EtcdError::UserAlreadyExist);
                }
                let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
                let user = User {
                    name: r.name.clone().into_bytes(),
                    password: if no_password {
                        Vec::new()
                    } else {
                        r.hashed_password.clone().into_bytes()
                    },
                    roles: Vec::new(),
                    options: Some(UserAddOptions { no_password }),
                };
                put_user(self.tx, self.ks, s, user);
            }
            Change::UserDelete(r) => {
                if s.enabled && r.name == ROOT {
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                if s.users.remove(&r.name).is_none() {
                    return Err(EtcdError::UserNotFound);
                }
                self.tx.remove(&self.ks.auth, key(USER, &r.name));
                self.auth.invalidate_user(&r.name);
            }
            Change::UserChangePassword(r) => {
                let mut user = s.user(&r.name).ok_or(EtcdError::UserNotFound)?.clone();
                user.password = r.hashed_password.clone().into_bytes();
                put_user(self.tx, self.ks, s, user);
                self.auth.invalidate_user(&r.name);
            }
            Change::UserGrantRole(r) => {
                let mut user = s.user(&r.user).ok_or(EtcdError::UserNotFound)?.clone();
                if r.role != ROOT && !s.roles.contains_key(&r.role) {
                    return Err(EtcdError::RoleNotFound);
                }
                match user.roles.binary_search(&r.role) {
                    Ok(_) => return Ok(s.revision), // already granted: no change
                    Err(at) => user.roles.insert(at, r.role.clone()),
                }
                put_user(self.tx, self.ks, s, user);
            }
            Change::UserRevokeRole(r) => {
                if s.enabled && r.name == ROOT && r.role == ROOT {
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                let mut user = s.user(&r.name).ok_or(EtcdError::UserNotFound)?.clone();
                let at = user
                    .roles
                    .iter()
                    .position(|x| *x == r.role)
                    .ok_or(EtcdError::RoleNotGranted)?;
                user.roles.remove(at);
                put_user(self.tx, self.ks, s, user);
            }
            Change::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(EtcdError::RoleEmpty);
                }
                if s.roles.contains_key(&r.name) {
                    return Err(EtcdError::RoleAlreadyExist);
                }
                let role = Role {
                    name: r.name.clone().into_bytes(),
                    key_permission: Vec::new(),
                };
                put_role(self.tx, self.ks, s, role);
            }
            Change::RoleDelete(r) => {
                if s.enabled && r.role == ROOT {
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                if s.roles.remove(&r.role).is_none() {
                    return Err(EtcdError::RoleNotFound);
                }
                self.tx.remove(&self.ks.auth, key(ROLE, &r.role));
                // etcd takes the role away from every user holding it.
                let holders: Vec<User> = s
                    .users
                    .values()
                    .filter(|u| u.roles.contains(&r.role))
                    .cloned()
                    .collect();
                for mut user in holders {
                    user.roles.retain(|x| *x != r.role);
                    put_user(self.tx, self.ks, s, user);
                }
            }
            Change::RoleGrantPermission(r) => {
                let mut role = s.roles.get(&r.name).ok_or(EtcdError::RoleNotFound)?.clone();
                let perm = r.perm.clone().unwrap_or_default();
                grant(&mut role.key_permission, perm);
                put_role(self.tx, self.ks, s, role);
            }
            Change::RoleRevokePermission(r) => {
                let mut role = s.roles.get(&r.role).ok_or(EtcdError::RoleNotFound)?.clone();
                let at = role
                    .key_permission
                    .iter()
                    .position(|p| p.key == r.key && p.range_end == r.range_end)
                    .ok_or(EtcdError::PermissionNotGranted)?;
                role.key_permission.remove(at);
                put_role(self.tx, self.ks, s, role);
            }
            Change::Authenticate(t) => {
                if !s.enabled {
                    return Err(EtcdError::AuthNotEnabled);
                }
                let user = s.user(&t.user).ok_or(EtcdError::AuthFailed)?;
                if user.options.as_ref().is_some_and(|o| o.no_password) {
                    return Err(EtcdError::AuthFailed);
                }
                if t.checked_revision != s.revision {
                    return Err(EtcdError::AuthOldRevision);
                }
                if !t.token.is_empty() {
                    self.auth.register(t); // (a JWT's check registers nothing)
                }
                return Ok(s.revision);
            }
        }
        s.revision += 1;
        self.tx
            .insert(&self.ks.auth, REVISION, s.revision.to_be_bytes());
        Ok(s.revision)
    }
}

type Tx<'a> = fjall::SingleWriterWriteTx<'a>;

fn put_user(tx: &mut Tx<'_>, ks: &Keyspaces, s: &mut AuthState, user: User) {
    let name = String::from_utf8_lossy(&user.name).into_owned();
    tx.insert(&ks.auth, key(USER, &name), user.encode_to_vec());
    s.users.insert(name, user);
}

fn put_role(tx: &mut Tx<'_>, ks: &Keyspaces, s: &mut AuthState, role: Role) {
    let name = String::from_utf8_lossy(&role.name).into_owned();
    tx.insert(&ks.auth, key(ROLE, &name), role.encode_to_vec());
    s.roles.insert(name, role);
}

/// etcd's grant: a permission on the same key and range end has its type
/// replaced; otherwise the new one goes in key order.
fn grant(perms: &mut Vec<Permission>, perm: Permission) {
    if let Some(p) = perms
        .iter_mut()
        .find(|p| p.key == perm.key && p.range_end == perm.range_end)
    {
        p.perm_type = perm.perm_type;
        return;
    }
    let at = perms.partition_point(|p| p.key < perm.key);
    perms.insert(at, perm);
}

/// Answer an auth store read as etcd does: lists and status need an
/// administrator; a user may read itself and the roles it holds.
pub fn query(
    state: &AuthState,
    who: &str,
    q: Option<Query>,
    revision: i64,
) -> Result<Answer, EtcdError> {
    let q = q.ok_or(EtcdError::NotCapable)?;
    let admin = state.check_admin(who);
    let header = Some(ResponseHeader {
        revision,
        ..Default::default()
    });
    Ok(match q {
        Query::Status(_) => Answer::Status(AuthStatusResponse {
            header,
            enabled: state.enabled,
            auth_revision: state.revision,
        }),
        Query::UserGet(r) => {
            if r.name != who {
                admin?;
            }
            let user = state.user(&r.name).ok_or(EtcdError::UserNotFound)?;
            Answer::UserGet(AuthUserGetResponse {
                header,
                roles: user.roles.clone(),
            })
        }
        Query::UserList(_) => {
            admin?;
            Answer::UserList(AuthUserListResponse {
                header,
                users: state.users.keys().cloned().collect(),
            })
        }
        Query::RoleGet(r) => {
            if !state.has_role(who, &r.role) {
                admin?;
            }
            let role = state.roles.get(&r.role).ok_or(EtcdError::RoleNotFound)?;
            Answer::RoleGet(AuthRoleGetResponse {
                header,
                perm: role.key_permission.clone(),
            })
        }
        Query::RoleList(_) => {
            admin?;
            Answer::RoleList(AuthRoleListResponse {
                header,
                roles: state.roles.keys().cloned().collect(),
            })
        }
    })
}
