package bridge

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/boltstate"
	"github.com/directus-bridge/directus-bridge/directus"
)

// Record is what the bridge knows about one machine user. It separates what
// Directus is known to hold (confirmed by its last answer) from what was
// written without a known outcome, so that after any failure the next step
// starts from the truth.
type Record struct {
	UserID string `json:"user_id"`
	// Issuer is the configured name of the issuer the user belongs to, for
	// rules and logs; IssuerURL is the issuer itself (iss), which binds the
	// user: an exchange from any other issuer is refused. Format 1 records
	// have no IssuerURL and are bound by name.
	Issuer    string `json:"issuer"`
	IssuerURL string `json:"issuer_url,omitempty"`
	Client    string `json:"client"`

	// Token, Expiry, Role and Policies are what Directus held at its last
	// answer: the static token ("" when none), the role id and every policy
	// attached to the user directly, with its access row.
	Token    string            `json:"-"`
	Sealed   []byte            `json:"token_sealed,omitempty"`
	Expiry   time.Time         `json:"expires_at,omitzero"`
	Role     string            `json:"role,omitempty"`
	Policies []directus.Access `json:"policies,omitempty"`

	// Unsure marks a write whose outcome is not known (it failed without a
	// definite refusal, its answer was lost, or the bridge stopped before
	// the answer came): Directus holds either the fields above or what was
	// written. Nothing is handed out while Unsure, and the next write reads
	// the user first. Maybe lists the tokens such writes carried: Directus
	// may hold one of them instead of Token, so each is revoked at its own
	// expiry like Token.
	Unsure bool        `json:"unsure,omitempty"`
	Maybe  []Candidate `json:"maybe,omitempty"`
	// Gone: Directus said the user does not exist (an administrator deleted
	// it); the next exchange creates it again.
	Gone bool `json:"gone,omitempty"`
	// Bound: the Directus user carries the bridge's binding in auth_data.
	Bound bool `json:"bound,omitempty"`

	Scopes []string `json:"scopes,omitempty"` // last granted scopes
	// Audiences and Claims of the last subject token that changed the
	// grant, so that the reconciler can re-evaluate the rules.
	Audiences []string            `json:"audiences,omitempty"`
	Claims    map[string][]string `json:"claims,omitempty"`
	// RawClaims are, as signed, the top-level claims the rules read
	// through claim paths and conditions (see recordClaims); Claims, kept
	// beside them, are what earlier versions read.
	RawClaims map[string]json.RawMessage `json:"raw_claims,omitempty"`
	// LastExchange is the time of the client's last successful exchange.
	LastExchange time.Time `json:"last_exchange,omitzero"`
	// SuspendedByBridge: the bridge suspended the user and may reactivate it.
	SuspendedByBridge bool `json:"suspended_by_bridge,omitempty"`
	// SuspendedCursor is Directus's newest activity row when the bridge
	// suspended the user: a write by anyone else after it makes the
	// suspension an administrator's, which the bridge never undoes.
	SuspendedCursor int64 `json:"suspended_cursor,omitempty"`
	// SuspendedByAdmin: Directus showed a status other than active that the
	// bridge did not set; exchanges are refused (after asking Directus
	// again) until an administrator reactivates the user.
	SuspendedByAdmin bool      `json:"suspended_by_admin,omitempty"`
	SuspendedAt      time.Time `json:"suspended_at,omitzero"`

	// Format is the record format: 2. Format 1 (no field) recorded a write
	// ahead of its outcome in place of the known state, marked Pending; it
	// is read as Unsure with the pending token as a candidate.
	Format  int  `json:"format,omitempty"`
	Pending bool `json:"pending,omitempty"`

	rev uint64 // changes with every Put, to notice a concurrent exchange
	ver int64  // the version in a shared state (0: none, or not shared)
	// own: on a replica, the version this process's own writes of the
	// record descend from since it last took another replica's (see
	// writeShared).
	own int64
}

// Candidate is a token that Directus may hold, with its expiry.
type Candidate struct {
	Token  string    `json:"-"`
	Sealed []byte    `json:"token_sealed,omitempty"`
	Expiry time.Time `json:"expires_at"`
}

// recordFormat is the format Put writes.
const recordFormat = 2

// live reports whether r holds a token that may be handed out at now:
// confirmed by Directus and not expired.
func (r *Record) live(now time.Time) bool {
	return r.Token != "" && !r.Unsure && !r.Gone && now.Before(r.Expiry)
}

// holdsToken reports whether Directus may hold a token of r's.
func (r *Record) holdsToken() bool { return r.Token != "" || len(r.Maybe) > 0 }

// expiredToken reports whether a token that Directus may hold has expired
// at now: the token slot must then be cleared.
func (r *Record) expiredToken(now time.Time) bool {
	if r.Token != "" && !now.Before(r.Expiry) {
		return true
	}
	for _, c := range r.Maybe {
		if !now.Before(c.Expiry) {
			return true
		}
	}
	return false
}

// liveToken reports whether Directus may hold a token of r's that has not
// expired.
func (r *Record) liveToken(now time.Time) bool {
	if r.Token != "" && now.Before(r.Expiry) {
		return true
	}
	for _, c := range r.Maybe {
		if now.Before(c.Expiry) {
			return true
		}
	}
	return false
}

// tokensCleared records that Directus confirmed the user holds no token.
func (r *Record) tokensCleared() {
	r.Token, r.Expiry, r.Maybe = "", time.Time{}, nil
}

// gone records that Directus confirmed the user does not exist.
func (r *Record) gone() {
	r.tokensCleared()
	r.Gone, r.Unsure, r.Bound = true, false, false
	r.Role, r.Policies = "", nil
}

// boundTo reports whether r belongs to the issuer cfg.
func (r *Record) boundTo(cfg *IssuerConfig) bool {
	if r.IssuerURL != "" {
		return r.IssuerURL == cfg.Issuer
	}
	return r.Issuer == cfg.Name
}

// migrate reads a format 1 record as format 2.
func (r *Record) migrate() {
	if r.Format >= recordFormat {
		return
	}
	if r.Pending {
		// The token was written ahead of a write whose outcome is unknown,
		// and the role and policies recorded were the intent.
		if r.Token != "" {
			r.Maybe = []Candidate{{Token: r.Token, Expiry: r.Expiry}}
		}
		r.Token, r.Expiry, r.Unsure = "", time.Time{}, true
	}
	r.Pending = false
	r.Format = recordFormat
}

// Store keeps records in memory and, when opened on a state.Backend (a
// bbolt file by default), durably there, with every token sealed
// (AES-256-GCM, the user id as associated data): a Backend never sees a
// token. Writes are synchronous; LastExchange updates from token reuse are
// batched and written by Flush, since losing one only makes a client look
// idle a little earlier.
type Store struct {
	// locks serialise the writes of one user in this process (Lock).
	locks userLocks
	// sh is set on a replica of a shared state (NewSharedStore).
	sh    *sharedState
	wmu   sync.Mutex // one writer at a time: Put, Flush, Delete
	mu    sync.RWMutex
	recs  map[string]*Record
	dirty map[string]bool
	db    state.Backend // nil: nothing durable
	aeads []cipher.AEAD // the first seals, every one opens
	// older are the records an older key than the first sealed (read so
	// at load, not rewritten since): what Reseal rewrites.
	older map[string]bool
	// onLost is called once when the Backend reports that another process
	// took the state over (state.ErrTakenOver).
	onLost   func(error)
	lostOnce sync.Once
	in       *interner
	rev      uint64
	// cursor is Watch's position in the Directus activity log.
	cursor    int64
	hasCursor bool
}

func newInterner() *interner {
	return &interner{strs: map[string]string{}, slices: map[string][]string{}}
}

// cursorKey is the meta key of Watch's activity cursor.
var cursorKey = state.MetaKeys[0]

// opTimeout bounds one operation on the Backend: a database that hangs
// fails the exchange (503) instead of holding it. A write's deadline runs
// from when it is asked for, before it waits for the writer lock: writes
// queued behind one that hangs fail with it instead of one timeout each.
var opTimeout = 10 * time.Second

func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// NewMemoryStore returns a Store that keeps nothing across restarts (tests).
func NewMemoryStore() *Store {
	return &Store{recs: map[string]*Record{}, dirty: map[string]bool{}, in: newInterner()}
}

// OpenStore opens (or creates) the bbolt state file at path with 32-byte
// keys: the first seals, every one opens (see NewStore).
func OpenStore(path string, keys ...[]byte) (*Store, error) {
	if err := checkKeys(keys); err != nil {
		return nil, err
	}
	b, err := boltstate.Open(path)
	if err != nil {
		return nil, err
	}
	s, err := NewStore(b, keys...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return s, nil
}

func checkKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return errors.New("state: a key is required")
	}
	for i, k := range keys {
		if len(k) != 32 {
			return fmt.Errorf("state: key %d must be 32 bytes, got %d", i+1, len(k))
		}
		for j := range i {
			if string(keys[j]) == string(k) {
				return fmt.Errorf("state: key %d is key %d again", i+1, j+1)
			}
		}
	}
	return nil
}

// NewStore loads every record of b and keeps them. Tokens are sealed with
// the first of the 32-byte keys and opened with whichever key sealed them:
// to rotate the key, put a new one first and keep the old ones until
// Reseal has rewritten what they sealed (SealedByOlderKeys is then 0). The
// Store owns b from then on: Close closes it.
func NewStore(b state.Backend, keys ...[]byte) (*Store, error) {
	return newStore(b, true, keys...)
}

// newStore is NewStore; load false leaves the records to NewSharedStore.
func newStore(b state.Backend, load bool, keys ...[]byte) (*Store, error) {
	if err := checkKeys(keys); err != nil {
		return nil, err
	}
	s := &Store{recs: map[string]*Record{}, dirty: map[string]bool{}, db: b, in: newInterner(), older: map[string]bool{}}
	for _, key := range keys {
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		s.aeads = append(s.aeads, aead)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := s.loadCursor(ctx); err != nil {
		return nil, err
	}
	if !load {
		return s, nil
	}
	err := b.Load(ctx, func(k string, v []byte) error {
		r := &Record{}
		if err := json.Unmarshal(v, r); err != nil {
			return fmt.Errorf("record %s: %w", k, err)
		}
		older, err := s.unseal(r)
		if err != nil {
			return fmt.Errorf("record %s: %w", k, err)
		}
		if older {
			s.older[r.UserID] = true
		}
		r.migrate()
		s.in.record(r)
		s.recs[r.UserID] = r
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: load: %w", err)
	}
	return s, nil
}

// loadCursor reads Watch's activity cursor from the Backend.
func (s *Store) loadCursor(ctx context.Context) error {
	v, ok, err := s.db.Meta(ctx, cursorKey)
	if err != nil {
		return s.failed(fmt.Errorf("state: load: %w", err))
	}
	if !ok {
		return nil
	}
	c, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return fmt.Errorf("state: load: activity cursor: %w", err)
	}
	s.mu.Lock()
	s.cursor, s.hasCursor = c, true
	s.mu.Unlock()
	return nil
}

// ReloadCursor reads Watch's activity cursor again: on a replica, the one
// that takes over the watcher continues where the last holder stopped.
func (s *Store) ReloadCursor() error {
	if s.db == nil {
		return nil
	}
	ctx, cancel := opCtx()
	defer cancel()
	return s.loadCursor(ctx)
}

// LoadKey returns the sealing key (the first of LoadKeys).
func LoadKey(envValue, keyFile string) ([]byte, error) {
	keys, err := LoadKeys(envValue, keyFile)
	if err != nil {
		return nil, err
	}
	return keys[0], nil
}

// LoadKeys returns the state keys, the sealing key first: from env when set
// (base64 of 32 bytes each, separated by commas or white space), else from
// keyFile (one a line), which is created with a random key (mode 0600)
// when it does not exist. An error names a key by its position, never by
// its value.
func LoadKeys(envValue, keyFile string) ([][]byte, error) {
	if envValue != "" {
		return parseKeys(envValue, "the state key")
	}
	b, err := os.ReadFile(keyFile)
	if errors.Is(err, os.ErrNotExist) {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		f, err := os.OpenFile(keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("state: create key file: %w", err)
		}
		_, werr := f.Write([]byte(base64.StdEncoding.EncodeToString(k) + "\n"))
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, fmt.Errorf("state: write key file: %w", werr)
		}
		return [][]byte{k}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: read key file: %w", err)
	}
	return parseKeys(string(b), "key file "+keyFile)
}

// parseKeys decodes base64 keys separated by commas or white space.
func parseKeys(s, from string) ([][]byte, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
	if len(fields) == 0 {
		return nil, fmt.Errorf("state: %s holds no key", from)
	}
	keys := make([][]byte, len(fields))
	for i, f := range fields {
		k, err := base64.StdEncoding.DecodeString(f)
		if err != nil || len(k) != 32 {
			return nil, fmt.Errorf("state: %s: key %d is not the base64 encoding of 32 bytes", from, i+1)
		}
		keys[i] = k
	}
	if err := checkKeys(keys); err != nil {
		return nil, fmt.Errorf("%w (%s)", err, from)
	}
	return keys, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// Get returns a copy of the record for userID.
func (s *Store) Get(userID string) (Record, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.recs[userID]
	if !ok {
		return Record{}, false
	}
	return r.clone(), true
}

// clone copies a record. The slices and maps of a stored record are shared
// and never modified in place: code that changes them assigns new ones.
func (r *Record) clone() Record { return *r }

// interner shares the backing data of values that repeat across records
// (issuer names, role ids, scope and audience sets), which keeps 100,000
// clients in well under 100 MB.
type interner struct {
	strs   map[string]string
	slices map[string][]string
}

func (in *interner) str(s string) string {
	if v, ok := in.strs[s]; ok {
		return v
	}
	in.strs[s] = s
	return s
}

func (in *interner) slice(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	key := strings.Join(s, "\x00")
	if v, ok := in.slices[key]; ok {
		return v
	}
	// A copy: the caller's slice may be shared (a cached identity's scopes).
	out := make([]string, len(s))
	for i := range s {
		out[i] = in.str(s[i])
	}
	in.slices[key] = out
	return out
}

func (in *interner) record(r *Record) {
	r.Issuer, r.Role = in.str(r.Issuer), in.str(r.Role)
	r.Scopes, r.Audiences = in.slice(r.Scopes), in.slice(r.Audiences)
}

// Put stores r durably before it returns.
func (s *Store) Put(r Record) error {
	return s.PutAll([]Record{r})
}

// PutAll stores records durably in one transaction.
func (s *Store) PutAll(rs []Record) error {
	ctx, cancel := opCtx()
	defer cancel()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.putAll(ctx, rs)
}

// putAll is PutAll with s.wmu held, its Backend write bounded by ctx.
func (s *Store) putAll(ctx context.Context, rs []Record) error {
	var vers, bases []int64 // on a replica: the versions written, and what they descend from
	if s.db != nil {
		es := make([]state.Entry, len(rs))
		for i := range rs {
			v, err := s.encode(&rs[i])
			if err != nil {
				return fmt.Errorf("state: write: %w", err)
			}
			es[i] = state.Entry{Key: rs[i].UserID, Value: v}
		}
		if s.sh != nil {
			var err error
			if vers, bases, err = s.writeShared(ctx, rs, es); err != nil {
				return s.failed(fmt.Errorf("state: write: %w", err))
			}
		} else if err := s.db.Put(ctx, es); err != nil {
			return s.failed(fmt.Errorf("state: write: %w", err))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range rs {
		c := rs[i].clone()
		if vers != nil {
			c.ver, c.own = vers[i], bases[i]
		}
		c.Format = recordFormat
		s.in.record(&c)
		s.rev++
		c.rev = s.rev
		s.recs[c.UserID] = &c
		delete(s.dirty, c.UserID)
		delete(s.older, c.UserID)
	}
	return nil
}

// Delete forgets the record of userID (a write that Directus definitely
// refused for a user the bridge did not know).
//
// r is the record as the writer read it (on a replica the delete is
// conditional on it, as a write is: see writeShared).
func (s *Store) Delete(r Record) error {
	userID := r.UserID
	ctx, cancel := opCtx()
	defer cancel()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.sh != nil {
		if err := s.deleteShared(ctx, r); err != nil {
			err = s.failed(err)
			return fmt.Errorf("state: delete: %w", err)
		}
	} else if s.db != nil {
		if err := s.db.Delete(ctx, userID); err != nil {
			err = s.failed(err)
			return fmt.Errorf("state: delete: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.recs, userID)
	delete(s.dirty, userID)
	delete(s.older, userID)
	return nil
}

func (s *Store) encode(r *Record) ([]byte, error) {
	c := *r
	c.Format = recordFormat
	var err error
	if c.Sealed, err = s.seal(r.UserID, r.Token); err != nil {
		return nil, err
	}
	c.Maybe = slices.Clone(r.Maybe)
	for i := range c.Maybe {
		if c.Maybe[i].Sealed, err = s.seal(r.UserID, c.Maybe[i].Token); err != nil {
			return nil, err
		}
	}
	return json.Marshal(&c)
}

// seal encrypts a token with the user id as associated data ("" stays nil).
func (s *Store) seal(userID, token string) ([]byte, error) {
	if token == "" {
		return nil, nil
	}
	aead := s.aeads[0]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, []byte(token), []byte(userID)), nil
}

// unseal decrypts the tokens of a record read from the file.
func (s *Store) unseal(r *Record) (older bool, err error) {
	open := func(sealed []byte) (string, error) {
		if len(sealed) == 0 {
			return "", nil
		}
		for i, aead := range s.aeads {
			n := aead.NonceSize()
			if len(sealed) < n+aead.Overhead() {
				return "", errors.New("sealed token is truncated")
			}
			if plain, err := aead.Open(nil, sealed[:n], sealed[n:], []byte(r.UserID)); err == nil {
				older = older || i > 0
				return string(plain), nil
			}
		}
		return "", errors.New("token does not decrypt (wrong state key?)")
	}
	if r.Token, err = open(r.Sealed); err != nil {
		return false, err
	}
	r.Sealed = nil
	for i := range r.Maybe {
		if r.Maybe[i].Token, err = open(r.Maybe[i].Sealed); err != nil {
			return false, err
		}
		r.Maybe[i].Sealed = nil
	}
	return older, nil
}

// SealedByOlderKeys counts the records whose tokens a key other than the
// first sealed: while it is above 0, those keys must stay.
func (s *Store) SealedByOlderKeys() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.older)
}

// Reseal rewrites, sealed with the first key, every record an older key
// sealed, and returns how many it rewrote. It writes 500 records at a time
// and lets other writes in between: each batch copies the records as they
// are when it is written, so that none written meanwhile goes back to an
// older value.
func (s *Store) Reseal() (int, error) {
	done := 0
	for {
		n, tried, err := s.resealBatch(500)
		done += n
		if err != nil || tried == 0 {
			return done, err
		}
	}
}

// resealBatch rewrites at most n of the records an older key sealed; tried
// is how many it looked at (0: none is left).
func (s *Store) resealBatch(n int) (written, tried int, err error) {
	if s.sh != nil {
		n = min(n, sharedBatch)
	}
	s.mu.RLock()
	ids := make([]string, 0, min(n, len(s.older)))
	for id := range s.older {
		if len(ids) == n {
			break
		}
		ids = append(ids, id)
	}
	s.mu.RUnlock()
	if len(ids) == 0 {
		return 0, 0, nil
	}
	ctx, cancel := opCtx()
	defer cancel()
	if s.sh != nil {
		// On a replica the users' locks come first (another replica may
		// write them), and the records are read again under them.
		unlock, err := s.Lock(ctx, ids...)
		if err != nil {
			return 0, len(ids), err
		}
		defer unlock()
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	var rs []Record
	for _, id := range ids {
		if r := s.recs[id]; r != nil && s.older[id] {
			rs = append(rs, r.clone())
		} else {
			delete(s.older, id)
		}
	}
	s.mu.Unlock()
	if len(rs) == 0 {
		return 0, len(ids), nil
	}
	if err := s.putAll(ctx, rs); err != nil {
		return 0, len(ids), err
	}
	return len(rs), len(ids), nil
}

// OnLost registers f, called once (from the writing goroutine) when the
// Backend reports that another process took the state over: the records in
// memory may be stale, and the process must stop. Set it before use.
func (s *Store) OnLost(f func(error)) { s.onLost = f }

// failed passes err on, telling onLost about a takeover.
func (s *Store) failed(err error) error {
	if errors.Is(err, state.ErrTakenOver) && s.onLost != nil {
		s.lostOnce.Do(func() { s.onLost(err) })
	}
	return err
}

// Cursor returns Watch's position in the Directus activity log, if any.
func (s *Store) Cursor() (int64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cursor, s.hasCursor
}

// SetCursor stores Watch's position durably.
func (s *Store) SetCursor(c int64) error {
	if s.db != nil {
		ctx, cancel := opCtx()
		defer cancel()
		if err := s.db.SetMeta(ctx, cursorKey, []byte(strconv.FormatInt(c, 10))); err != nil {
			err = s.failed(err)
			return fmt.Errorf("state: write cursor: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cursor, s.hasCursor = c, true
	return nil
}

// Touch records an exchange that changed nothing else; Flush persists it.
func (s *Store) Touch(userID string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.recs[userID]; r != nil && at.After(r.LastExchange) {
		r.LastExchange = at
		s.dirty[userID] = true
	}
}

// Flush writes the records changed by Touch.
func (s *Store) Flush() error {
	if s.sh != nil {
		return s.flushShared()
	}
	// Writers are held off while the records are copied and written: a
	// copy written after a newer Put would undo it.
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	var rs []Record
	for id := range s.dirty {
		if r := s.recs[id]; r != nil {
			rs = append(rs, r.clone())
		}
	}
	s.mu.RUnlock()
	if len(rs) == 0 {
		return nil
	}
	ctx, cancel := opCtx()
	defer cancel()
	return s.putAll(ctx, rs)
}

// All returns a copy of every record.
func (s *Store) All() []Record {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Record, 0, len(s.recs))
	for _, r := range s.recs {
		out = append(out, r.clone())
	}
	return out
}

// Len returns the number of records.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.recs)
}

// Close flushes and closes the Backend.
func (s *Store) Close() error {
	err := s.Flush()
	s.closeShared()
	if s.db != nil {
		if cerr := s.db.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// LiveTokens counts the records holding a token that has not expired.
func (s *Store) LiveTokens(now time.Time) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, r := range s.recs {
		if r.liveToken(now) {
			n++
		}
	}
	return n
}
