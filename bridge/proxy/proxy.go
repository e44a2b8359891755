package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
)

// Exchanger is what the proxy needs of the bridge; *bridge.Server
// satisfies it.
type Exchanger interface {
	// Trusts reports whether raw looks like a JWT of a trusted issuer,
	// verifying nothing: such a credential is exchanged, never forwarded.
	Trusts(raw string) bool
	// Swap exchanges subject for the request r, as the exchange endpoint
	// would, logging and counting it.
	Swap(ctx context.Context, r *http.Request, subject string) (*bridge.Result, *bridge.Error)
}

// Options configure a Proxy. Zero values take the defaults named.
type Options struct {
	// Upstream is Directus's base URL (scheme, host, optional path; no
	// query).
	Upstream *url.URL
	// Exchanger swaps IdP tokens for static tokens.
	Exchanger Exchanger
	Logger    *slog.Logger
	// TrustedProxies are the peers whose X-Forwarded-For, -Host and
	// -Proto are passed on (extended by the peer's address); from anyone
	// else they are replaced.
	TrustedProxies []netip.Prefix
	// MaxConnections bounds the requests forwarded to Directus at once,
	// websockets apart (default 256). A request waits QueueTimeout for a
	// free one, then gets 503.
	MaxConnections int
	// MaxWebsockets bounds the websocket connections open through the
	// proxy at once (default 1024).
	MaxWebsockets int
	// QueueTimeout is how long a request waits for a free upstream
	// connection (default 5s).
	QueueTimeout time.Duration
	// DialTimeout bounds connecting to Directus (default 5s).
	DialTimeout time.Duration
	// ResponseTimeout bounds the wait for Directus's response headers once
	// the request is sent (default 60s). Bodies are not bounded: a large
	// download streams as long as both ends keep it going.
	ResponseTimeout time.Duration
	// MaxReplayBytes: a swapped request with a body of at most this many
	// bytes (and a Content-Length) is held so that it can be sent again
	// with the new token after a rotation raced it (default 64 KiB;
	// negative never holds a body). Larger bodies stream.
	MaxReplayBytes int64
	// Transport, when set, replaces the transport built from the options
	// above (tests).
	Transport http.RoundTripper
}

// Defaults of Options.
const (
	DefaultMaxConnections  = 256
	DefaultMaxWebsockets   = 1024
	DefaultQueueTimeout    = 5 * time.Second
	DefaultDialTimeout     = 5 * time.Second
	DefaultResponseTimeout = 60 * time.Second
	DefaultMaxReplayBytes  = 64 << 10
)

// upstreamIdle is how long an idle connection to Directus is kept: less
// than Node's keep-alive timeout (5 s), so that the proxy never sends a
// request on a connection Directus is closing.
const upstreamIdle = 4 * time.Second

// Proxy is the reverse proxy; it is an http.Handler.
type Proxy struct {
	o       Options
	log     *slog.Logger
	rp      *httputil.ReverseProxy
	conns   chan struct{} // a slot per request forwarded
	sockets chan struct{} // a slot per websocket
	// bodyTimeout bounds reading a body held for a replay (replayBodyTimeout).
	bodyTimeout time.Duration
}

// replayBodyTimeout bounds reading a body held for a replay (at most
// MaxReplayBytes): the proxy reads it before Directus sees the request,
// so no timeout of Directus's applies, and a client that stops sending
// it would hold its upstream slot for ever.
const replayBodyTimeout = 30 * time.Second

// New builds a Proxy; it makes no request.
func New(o Options) (*Proxy, error) {
	if o.Upstream == nil || o.Upstream.Host == "" || (o.Upstream.Scheme != "http" && o.Upstream.Scheme != "https") {
		return nil, errors.New("proxy: upstream must be an http or https URL")
	}
	if o.Upstream.RawQuery != "" || o.Upstream.Fragment != "" || o.Upstream.User != nil {
		return nil, errors.New("proxy: upstream must not have a query, fragment or user info")
	}
	if o.Exchanger == nil {
		return nil, errors.New("proxy: no exchanger")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	if o.MaxWebsockets <= 0 {
		o.MaxWebsockets = DefaultMaxWebsockets
	}
	if o.QueueTimeout <= 0 {
		o.QueueTimeout = DefaultQueueTimeout
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.ResponseTimeout <= 0 {
		o.ResponseTimeout = DefaultResponseTimeout
	}
	if o.MaxReplayBytes == 0 {
		o.MaxReplayBytes = DefaultMaxReplayBytes
	}
	p := &Proxy{o: o, log: o.Logger, conns: make(chan struct{}, o.MaxConnections), sockets: make(chan struct{}, o.MaxWebsockets),
		bodyTimeout: replayBodyTimeout}
	tr := o.Transport
	if tr == nil {
		tr = &http.Transport{
			Proxy:                 nil, // Directus is reached directly, whatever HTTP_PROXY says
			DialContext:           (&net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          o.MaxConnections,
			MaxIdleConnsPerHost:   o.MaxConnections,
			MaxConnsPerHost:       o.MaxConnections + o.MaxWebsockets,
			IdleConnTimeout:       upstreamIdle,
			ResponseHeaderTimeout: o.ResponseTimeout,
			ExpectContinueTimeout: time.Second,
			TLSHandshakeTimeout:   o.DialTimeout,
			// Accept-Encoding goes to Directus as the client wrote it, and
			// its answer comes back as Directus wrote it.
			DisableCompression: true,
		}
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      &replayTransport{base: tr, p: p},
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.upstreamError,
		BufferPool:     bufferPool{},
		ErrorLog:       slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// swap is what the proxy changed in a request: kept in its context for
// rewrite, the replay and the websocket.
type swap struct {
	in      *http.Request // the incoming request (for Swap: the caller's address)
	cred    credential
	subject string
	token   string
}

type ctxKey int

const swapKey ctxKey = 0

func swapOf(ctx context.Context) *swap {
	s, _ := ctx.Value(swapKey).(*swap)
	return s
}

// ServeHTTP forwards r to Directus, its IdP token swapped.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	slots := p.conns
	websocket := isWebsocket(r.Header)
	if websocket {
		slots = p.sockets
	}
	if !acquire(r.Context(), slots, p.o.QueueTimeout) {
		if r.Context().Err() == nil {
			apiError{Status: 503, Code: codeUnavailable, RetryAfter: time.Second,
				Message: "Service is unavailable. Too many requests in progress."}.write(w)
		}
		return
	}
	defer func() { <-slots }()

	creds := credentials(r.Header, r.URL.RawQuery)
	if q := sentQuery(r.URL.RawQuery); q != r.URL.RawQuery {
		// Directus gets the query re-encoded: what it then reads counts too.
		for _, c := range credentials(nil, q) {
			if !slices.Contains(creds, c) {
				creds = append(creds, c)
			}
		}
	}
	var idp *credential
	trusted := 0
	for i := range creds {
		if p.o.Exchanger.Trusts(creds[i].value) {
			idp = &creds[i]
			trusted++
		}
	}
	if idp == nil {
		p.rp.ServeHTTP(w, r) // not the bridge's: untouched
		return
	}
	id := bridge.NewRequestID(r.Header.Get("X-Request-Id"))
	ctx := bridge.WithRequestID(r.Context(), id)
	w.Header().Set("X-Request-Id", id)
	if len(creds) > 1 || idp.malformed {
		// Directus refuses more than one token too, with these words.
		msg := "Invalid payload. The request uses more than one method for including an access token."
		why := "more than one access token"
		if len(creds) == 1 {
			msg, why = "Invalid payload. The access token is malformed.", "a malformed access token"
		}
		p.log.LogAttrs(ctx, slog.LevelInfo, "proxy refused", slog.String("request_id", id), slog.String("reason", why),
			slog.String("subject_fp", bridge.Fingerprint(idp.value)), slog.Int("trusted", trusted))
		apiError{Status: 400, Code: codeInvalidPayload, Message: msg}.write(w)
		return
	}
	res, e := p.o.Exchanger.Swap(ctx, r, idp.value)
	if e != nil {
		refusal(e).write(w)
		return
	}
	s := &swap{in: r, cred: *idp, subject: idp.value, token: res.Token}
	out := r.WithContext(context.WithValue(ctx, swapKey, s))
	if n := r.ContentLength; n > 0 && n <= p.o.MaxReplayBytes && !websocket {
		body := make([]byte, n)
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(p.bodyTimeout))
		if _, err := io.ReadFull(r.Body, body); err != nil {
			// The deadline stays: the server gives up the rest of the body
			// at once instead of waiting for it, and closes the connection.
			w.Header().Set("Connection", "close")
			apiError{Status: 400, Code: codeInvalidPayload, Message: "Invalid payload. The request body could not be read."}.write(w)
			return
		}
		_ = rc.SetReadDeadline(time.Time{})
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	p.rp.ServeHTTP(w, out)
}

// sentQuery is the query net/http's reverse proxy sends for q: q itself,
// or, when q holds a ";" or a bad escape, q re-encoded from the parts
// url.ParseQuery accepts (as its cleanQueryParams does).
func sentQuery(q string) string {
	for i := 0; i < len(q); i++ {
		switch {
		case q[i] == ';':
		case q[i] == '%' && (i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2])):
		default:
			continue
		}
		v, _ := url.ParseQuery(q)
		return v.Encode()
	}
	return q
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// acquire takes a slot, waiting at most d.
func acquire(ctx context.Context, slots chan struct{}, d time.Duration) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// rewrite makes the request sent to Directus.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(p.o.Upstream)
	if p.trusted(pr.In.RemoteAddr) {
		// A trusted proxy's view of the client is extended, not replaced.
		h := pr.In.Header
		if v := h["X-Forwarded-For"]; len(v) > 0 {
			pr.Out.Header["X-Forwarded-For"] = []string{strings.Join(v, ", ")}
		}
		pr.SetXForwarded()
		for _, k := range []string{"X-Forwarded-Host", "X-Forwarded-Proto"} {
			if v := h.Get(k); v != "" {
				pr.Out.Header.Set(k, v)
			}
		}
	} else {
		pr.SetXForwarded()
	}
	if s := swapOf(pr.In.Context()); s != nil {
		s.cred.replace(pr.Out, s.subject, s.token)
	}
	if isWebsocket(pr.Out.Header) {
		// No compression: the proxy reads the client's auth message.
		pr.Out.Header.Del("Sec-Websocket-Extensions")
	}
}

// trusted reports whether the peer at addr is a trusted proxy.
func (p *Proxy) trusted(addr string) bool {
	if len(p.o.TrustedProxies) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, pfx := range p.o.TrustedProxies {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

// modifyResponse hides the static token from the answer to a swapped
// request and puts the websocket filter on an upgraded connection.
func (p *Proxy) modifyResponse(res *http.Response) error {
	if s := swapOf(res.Request.Context()); s != nil {
		s.hide(res)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		return nil
	}
	conn, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		return nil // ReverseProxy refuses it
	}
	req := res.Request
	in := req
	if s := swapOf(req.Context()); s != nil {
		in = s.in
	}
	res.Body = newFrameFilter(conn, func(subject string) (string, bool) {
		if !p.o.Exchanger.Trusts(subject) {
			return "", false
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), 30*time.Second)
		defer cancel()
		if bridge.RequestID(ctx) == "" {
			ctx = bridge.WithRequestID(ctx, bridge.NewRequestID(""))
		}
		swapped, e := p.o.Exchanger.Swap(ctx, in, subject)
		if e != nil {
			return refusedToken, true
		}
		return swapped.Token, true
	})
	return nil
}

// hide puts the client's own token back where Directus echoed the static
// token it was swapped for in a response header: Directus's app server
// redirects a directory to the same URL with a trailing slash, query and
// its access_token included. The body of such a redirect, which repeats
// the URL, is dropped. Bodies of other answers are not read.
func (s *swap) hide(res *http.Response) {
	if s.token == "" {
		return
	}
	forms := [][2]string{{s.token, s.subject}}
	if q := url.QueryEscape(s.token); q != s.token {
		forms = append(forms, [2]string{q, url.QueryEscape(s.subject)})
	}
	hidden := false
	for _, vs := range res.Header {
		for i, v := range vs {
			for _, f := range forms {
				if strings.Contains(v, f[0]) {
					v, hidden = strings.ReplaceAll(v, f[0], f[1]), true
				}
			}
			vs[i] = v
		}
	}
	if hidden && res.StatusCode >= 300 && res.StatusCode < 400 {
		_ = res.Body.Close()
		res.Body, res.ContentLength = http.NoBody, 0
		res.Header.Set("Content-Length", "0")
	}
}

// refusedToken replaces a refused IdP token in a websocket auth message:
// Directus then refuses it itself, with its own error message, and the
// IdP token never reaches it. It is a JWT of issuer "directus"
// ({"iss":"directus","refused_by":"directus-bridge"}) with a signature
// that is no HMAC: Directus verifies such a token against its secret and
// never looks it up as a static token, which an admin may set to any
// string.
const refusedToken = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJkaXJlY3R1cyIsInJlZnVzZWRfYnkiOiJkaXJlY3R1cy1icmlkZ2UifQ.cmVmdXNlZC1ieS1kaXJlY3R1cy1icmlkZ2U"

// upstreamError answers a request Directus did not answer.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away: nobody to answer
	}
	why := "Directus cannot be reached"
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		why = "Directus did not answer in time"
	}
	// The error of a request carries its URL, which may hold a token:
	// only the path and the cause's kind are logged.
	var ue *url.Error
	cause := err
	if errors.As(err, &ue) {
		cause = ue.Err
	}
	p.log.LogAttrs(r.Context(), slog.LevelWarn, "proxy: upstream failed", slog.String("request_id", bridge.RequestID(r.Context())),
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("err", redactedCause(cause)))
	upstreamDown(why).write(w)
}

// redactedCause is the text of an upstream error with any URL removed.
func redactedCause(err error) string {
	s := err.Error()
	if i := strings.Index(s, "?"); i >= 0 {
		s = s[:i] + "?[query removed]"
	}
	return s
}

// replayTransport sends a swapped request once more when Directus refused
// its token because the token had been replaced meanwhile.
type replayTransport struct {
	base http.RoundTripper
	p    *Proxy
}

func (t *replayTransport) RoundTrip(out *http.Request) (*http.Response, error) {
	res, err := t.base.RoundTrip(out)
	s := swapOf(out.Context())
	if err != nil || s == nil || res.StatusCode != http.StatusUnauthorized || isWebsocket(out.Header) {
		return res, err
	}
	if out.Body != nil && out.Body != http.NoBody && out.GetBody == nil {
		return res, nil // streamed: cannot be sent again
	}
	// Between the exchange and Directus's check of the token, a concurrent
	// request may have rotated it (Directus holds one token per user) or
	// the revoker may have revoked it at its expiry. The exchange now gives
	// the live token, or the same one when the refusal has another cause.
	next, e := t.p.o.Exchanger.Swap(out.Context(), s.in, s.subject)
	if e != nil || next.Token == s.token {
		return res, nil
	}
	_, _ = io.CopyN(io.Discard, res.Body, 64<<10)
	_ = res.Body.Close()
	again := out.Clone(out.Context())
	if out.GetBody != nil {
		body, err := out.GetBody()
		if err != nil {
			return nil, fmt.Errorf("proxy: replay: %w", err)
		}
		again.Body = body
	}
	s.cred.replace(again, s.token, next.Token)
	s.token = next.Token // the one Directus now holds (see swap.hide)
	return t.base.RoundTrip(again)
}

// isWebsocket reports whether h asks to upgrade to a websocket as the
// reverse proxy reads it: Connection names upgrade, and the first Upgrade
// header (the one it sends on) is websocket.
func isWebsocket(h http.Header) bool {
	return hasToken(h["Connection"], "upgrade") && strings.EqualFold(strings.TrimSpace(h.Get("Upgrade")), "websocket")
}

// hasToken reports whether the comma-separated values vs hold token (in
// any case).
func hasToken(vs []string, token string) bool {
	for _, v := range vs {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// bufferPool is httputil.BufferPool over 32 KiB buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
