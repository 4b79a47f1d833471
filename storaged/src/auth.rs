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

use crate::schema::{
    Keyspaces, AUTH_ENABLED as ENABLED, AUTH_REVISION as REVISION, ROLE_PREFIX as ROLE,
    USER_PREFIX as USER,
};
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

#[cfg(test)]
mod tests {
    use super::*;
    use common::proto::authpb::permission::Type as PermType;
    use common::proto::etcdserverpb::{
        AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
        AuthRoleGetRequest, AuthRoleGrantPermissionRequest, AuthUserAddRequest,
        AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGetRequest,
        AuthUserGrantRoleRequest, AuthUserListRequest, AuthUserRevokeRoleRequest,
    };
    use fjall::SingleWriterTxDatabase;

    /// An auth store on a fresh database: each change is applied in a
    /// transaction of its own and committed, as one raft entry would be.
    struct Store {
        _dir: tempfile::TempDir,
        db: SingleWriterTxDatabase,
        ks: Keyspaces,
        state: Arc<AuthState>,
        auth: Auth,
    }

    impl Store {
        fn new() -> Store {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = SingleWriterTxDatabase::builder(dir.path())
                .open()
                .expect("open");
            let ks = Keyspaces::open(&db).expect("keyspaces");
            let state = AuthState::load(&db.read_tx(), &ks).expect("load");
            Store {
                _dir: dir,
                db,
                ks,
                auth: Auth::new(state.clone()),
                state: Arc::new(state),
            }
        }

        fn apply(&mut self, op: Change, who: Option<&str>) -> Result<u64, EtcdError> {
            let mut tx = self.db.write_tx();
            let got = Changer {
                tx: &mut tx,
                ks: &self.ks,
                state: &mut self.state,
                auth: &self.auth,
            }
            .apply(&AuthChange { op: Some(op) }, who);
            tx.commit().expect("commit");
            got
        }

        /// What a restarted storaged would load.
        fn reloaded(&self) -> AuthState {
            AuthState::load(&self.db.read_tx(), &self.ks).expect("reload")
        }

        fn add_user(&mut self, name: &str) {
            let add = AuthUserAddRequest {
                name: name.into(),
                hashed_password: format!("hash-of-{name}"),
                ..Default::default()
            };
            self.apply(Change::UserAdd(add), None).expect("user add");
        }

        fn add_role(&mut self, name: &str) {
            let add = AuthRoleAddRequest { name: name.into() };
            self.apply(Change::RoleAdd(add), None).expect("role add");
        }

        fn grant_role(&mut self, user: &str, role: &str) -> Result<u64, EtcdError> {
            let g = AuthUserGrantRoleRequest {
                user: user.into(),
                role: role.into(),
            };
            self.apply(Change::UserGrantRole(g), None)
        }

        fn enable(&mut self) -> Result<u64, EtcdError> {
            self.apply(Change::Enable(AuthEnableRequest {}), None)
        }

        fn token(&self, user: &str, token: &str) -> SimpleToken {
            SimpleToken {
                user: user.into(),
                token: common::secrets::digest(token.as_bytes()),
                ttl_seconds: 300,
                checked_revision: self.state.revision,
            }
        }
    }

    fn same(a: &AuthState, b: &AuthState) {
        assert_eq!(
            (a.enabled, a.revision, &a.users, &a.roles),
            (b.enabled, b.revision, &b.users, &b.roles)
        );
    }

    fn perm(key: &str, range_end: &str, t: PermType) -> Permission {
        Permission {
            perm_type: t as i32,
            key: key.into(),
            range_end: range_end.into(),
        }
    }

    #[test]
    fn enabling_needs_a_root_user_holding_the_root_role() {
        let mut s = Store::new();
        assert_eq!(s.state.revision, 1, "a fresh store is at auth revision 1");
        assert_eq!(s.enable(), Err(EtcdError::RootUserNotExist));
        s.add_user(ROOT);
        assert_eq!(s.enable(), Err(EtcdError::RootRoleNotExist));
        assert_eq!(s.grant_role(ROOT, ROOT), Ok(3), "root needs no role entry");
        assert_eq!(s.enable(), Ok(4));
        assert_eq!(s.enable(), Ok(4), "enabling twice changes nothing");
        assert!(s.state.enabled);
        same(&s.state, &s.reloaded());
    }

    #[test]
    fn only_root_changes_an_enabled_store_and_root_stays() {
        let mut s = Store::new();
        s.add_user(ROOT);
        s.grant_role(ROOT, ROOT).expect("grant");
        s.add_user("alice");
        s.enable().expect("enable");
        let add = |n: &str| Change::RoleAdd(AuthRoleAddRequest { name: n.into() });
        assert_eq!(
            s.apply(add("r"), Some("alice")),
            Err(EtcdError::PermissionDenied)
        );
        assert_eq!(s.apply(add("r"), Some("")), Err(EtcdError::UserEmpty));
        assert_eq!(
            s.apply(add("r"), Some("nobody")),
            Err(EtcdError::UserNotFound)
        );
        assert!(s.apply(add("r"), Some(ROOT)).is_ok());
        let delete_root = Change::UserDelete(AuthUserDeleteRequest { name: ROOT.into() });
        assert_eq!(s.apply(delete_root, None), Err(EtcdError::InvalidAuthMgmt));
        let revoke_root = Change::UserRevokeRole(AuthUserRevokeRoleRequest {
            name: ROOT.into(),
            role: ROOT.into(),
        });
        assert_eq!(s.apply(revoke_root, None), Err(EtcdError::InvalidAuthMgmt));
        let delete_role = Change::RoleDelete(AuthRoleDeleteRequest { role: ROOT.into() });
        assert_eq!(s.apply(delete_role, None), Err(EtcdError::InvalidAuthMgmt));
        same(&s.state, &s.reloaded());
    }

    #[test]
    fn users_and_roles_follow_etcds_rules() {
        let mut s = Store::new();
        s.add_user("alice");
        let again = AuthUserAddRequest {
            name: "alice".into(),
            ..Default::default()
        };
        assert_eq!(
            s.apply(Change::UserAdd(again), None),
            Err(EtcdError::UserAlreadyExist)
        );
        let empty = AuthUserAddRequest::default();
        assert_eq!(
            s.apply(Change::UserAdd(empty), None),
            Err(EtcdError::UserEmpty)
        );
        assert_eq!(
            s.grant_role("alice", "reader"),
            Err(EtcdError::RoleNotFound)
        );
        assert_eq!(s.grant_role("bob", ROOT), Err(EtcdError::UserNotFound));
        s.add_role("reader");
        s.add_role("writer");
        let rev = s.grant_role("alice", "writer").expect("grant");
        s.grant_role("alice", "reader").expect("grant");
        assert!(s.grant_role("alice", "reader").expect("again") > rev);
        let rev = s.state.revision;
        assert_eq!(
            s.grant_role("alice", "reader"),
            Ok(rev),
            "no change, no bump"
        );
        let roles = &s.state.users["alice"].roles;
        assert_eq!(roles, &["reader", "writer"], "kept sorted");
        // Deleting a role takes it from every holder.
        let delete = Change::RoleDelete(AuthRoleDeleteRequest {
            role: "reader".into(),
        });
        s.apply(delete, None).expect("delete");
        assert_eq!(s.state.users["alice"].roles, ["writer"]);
        let revoke = |role: &str| {
            Change::UserRevokeRole(AuthUserRevokeRoleRequest {
                name: "alice".into(),
                role: role.into(),
            })
        };
        assert_eq!(
            s.apply(revoke("reader"), None),
            Err(EtcdError::RoleNotGranted)
        );
        s.apply(revoke("writer"), None).expect("revoke");
        same(&s.state, &s.reloaded());
    }

    #[test]
    fn a_permission_on_the_same_range_is_replaced_and_others_kept_in_key_order() {
        let mut s = Store::new();
        s.add_role("r");
        let grant = |p: Permission| {
            Change::RoleGrantPermission(AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(p),
            })
        };
        s.apply(grant(perm("m", "n", PermType::Read)), None)
            .expect("grant");
        s.apply(grant(perm("a", "", PermType::Write)), None)
            .expect("grant");
        s.apply(grant(perm("m", "n", PermType::Readwrite)), None)
            .expect("grant");
        let perms = &s.state.roles["r"].key_permission;
        assert_eq!(
            perms,
            &[
                perm("a", "", PermType::Write),
                perm("m", "n", PermType::Readwrite)
            ]
        );
        let revoke = Change::RoleRevokePermission(
            common::proto::etcdserverpb::AuthRoleRevokePermissionRequest {
                role: "r".into(),
                key: b"z".to_vec(),
                range_end: Vec::new(),
            },
        );
        assert_eq!(s.apply(revoke, None), Err(EtcdError::PermissionNotGranted));
        same(&s.state, &s.reloaded());
    }

    #[test]
    fn a_token_is_registered_at_the_checked_revision_and_dropped_with_its_user() {
        let mut s = Store::new();
        let early = s.token("alice", "t0");
        assert_eq!(
            s.apply(Change::Authenticate(early), None),
            Err(EtcdError::AuthNotEnabled)
        );
        s.add_user(ROOT);
        s.grant_role(ROOT, ROOT).expect("grant");
        s.add_user("alice");
        s.enable().expect("enable");
        let stale = SimpleToken {
            checked_revision: s.state.revision - 1,
            ..s.token("alice", "t1")
        };
        assert_eq!(
            s.apply(Change::Authenticate(stale), None),
            Err(EtcdError::AuthOldRevision)
        );
        let rev = s.state.revision;
        let t = s.token("alice", "t2");
        assert_eq!(s.apply(Change::Authenticate(t), Some("alice")), Ok(rev));
        assert_eq!(s.auth.resolve("t2").as_deref(), Some("alice"));
        assert_eq!(s.auth.resolve("t1"), None);
        // A new password ends the user's tokens; disabling ends them all.
        let change = Change::UserChangePassword(AuthUserChangePasswordRequest {
            name: "alice".into(),
            hashed_password: "new".into(),
            ..Default::default()
        });
        s.apply(change, None).expect("change password");
        assert_eq!(s.auth.resolve("t2"), None);
        let t = s.token(ROOT, "t3");
        s.apply(Change::Authenticate(t), None).expect("auth");
        s.apply(Change::Disable(AuthDisableRequest {}), Some(ROOT))
            .expect("disable");
        assert_eq!(s.auth.resolve("t3"), None);
        same(&s.state, &s.reloaded());
    }

    #[test]
    fn a_user_reads_itself_and_its_roles_only_an_admin_lists() {
        let mut s = Store::new();
        s.add_user(ROOT);
        s.grant_role(ROOT, ROOT).expect("grant");
        s.add_user("alice");
        s.add_user("bob");
        s.add_role("reader");
        s.add_role("secret");
        s.grant_role("alice", "reader").expect("grant");
        s.enable().expect("enable");
        let st = &s.state;
        let user_get = |n: &str| Some(Query::UserGet(AuthUserGetRequest { name: n.into() }));
        let role_get = |r: &str| Some(Query::RoleGet(AuthRoleGetRequest { role: r.into() }));
        assert!(query(st, "alice", user_get("alice"), 1).is_ok());
        assert!(query(st, "alice", role_get("reader"), 1).is_ok());
        assert_eq!(
            query(st, "alice", user_get("bob"), 1).err(),
            Some(EtcdError::PermissionDenied)
        );
        assert_eq!(
            query(st, "alice", role_get("secret"), 1).err(),
            Some(EtcdError::PermissionDenied)
        );
        let list = Some(Query::UserList(AuthUserListRequest {}));
        assert_eq!(
            query(st, "alice", list.clone(), 1).err(),
            Some(EtcdError::PermissionDenied)
        );
        match query(st, ROOT, list, 1) {
            Ok(Answer::UserList(l)) => assert_eq!(l.users, ["alice", "bob", ROOT]),
            other => panic!("root lists users: {other:?}"),
        }
        assert_eq!(query(st, ROOT, None, 1).err(), Some(EtcdError::NotCapable));
    }
}
