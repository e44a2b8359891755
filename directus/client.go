package directus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-resty/resty/v2"
)

// Options tune a Client. The zero value is usable: every field has a default.
type Options struct {
	// Timeout bounds one HTTP round trip (default 10s). Retries get their own.
	Timeout time.Duration
	// Retries is how often a request that failed with a transport error,
	// 429, 502, 503 or 504 is sent again (default 2; negative disables).
	Retries int
	// RetryWait is the first backoff (default 100ms); RetryMaxWait caps every
	// wait, including one asked for by Retry-After (default 2s).
	RetryWait    time.Duration
	RetryMaxWait time.Duration
	// Transport replaces the HTTP transport (tests count requests with it).
	Transport http.RoundTripper
	// UserAgent is sent with every request (default "directus-bridge").
	UserAgent string
	// Observe, when set, is called after every round trip with the operation
	// name, the HTTP status (0 for a transport error) and the duration.
	Observe func(op string, status int, d time.Duration)
}

// Client talks to one Directus instance with one static token (the bridge's
// admin token). It is safe for concurrent use.
type Client struct {
	r       *resty.Client
	observe func(op string, status int, d time.Duration)
}

// New returns a Client for the Directus at baseURL, authenticating every
// request with token. It makes no request.
func New(baseURL, token string, o Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	switch {
	case err != nil:
		return nil, errors.New("directus: the base URL does not parse: want an absolute http(s) URL")
	case u.User != nil:
		return nil, fmt.Errorf("directus: base URL of %s: must not hold credentials (user:password@): Directus is reached with a token", u.Host)
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return nil, fmt.Errorf("directus: base URL %q: want an absolute http(s) URL", baseURL)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Retries == 0 {
		o.Retries = 2
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.RetryWait <= 0 {
		o.RetryWait = 100 * time.Millisecond
	}
	if o.RetryMaxWait <= 0 {
		o.RetryMaxWait = 2 * time.Second
	}
	if o.UserAgent == "" {
		o.UserAgent = "directus-bridge"
	}
	r := resty.New().
		SetBaseURL(strings.TrimSuffix(u.String(), "/")).
		SetTimeout(o.Timeout).
		SetHeader("User-Agent", o.UserAgent).
		SetHeader("Accept", "application/json").
		SetRetryCount(o.Retries).
		SetRetryWaitTime(o.RetryWait).
		SetRetryMaxWaitTime(o.RetryMaxWait).
		SetRetryAfter(retryAfter).
		AddRetryCondition(func(resp *resty.Response, err error) bool {
			if err != nil {
				return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
			}
			switch resp.StatusCode() {
			case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
				return true
			}
			return false
		})
	if token != "" {
		r.SetAuthToken(token)
	}
	if o.Transport != nil {
		r.SetTransport(o.Transport)
	}
	r.SetLogger(discardLogger{})
	return &Client{r: r, observe: o.Observe}, nil
}

// retryAfter honours a Retry-After header given in seconds; resty caps the
// result at RetryMaxWait. Zero means "use the jittered backoff".
func retryAfter(_ *resty.Client, resp *resty.Response) (time.Duration, error) {
	if resp == nil {
		return 0, nil
	}
	return parseRetryAfter(resp.Header().Get("Retry-After")), nil
}

func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// request describes one API call. secrets are values sent in the body that
// must never come back in an error message.
type request struct {
	op      string
	method  string
	path    string
	query   url.Values
	body    any
	out     any // pointer decoded from the "data" member, or nil
	secrets []string
}

// envelope is the shape of every Directus JSON response.
type envelope struct {
	Data   json.RawMessage `json:"data"`
	Errors []struct {
		Message    string `json:"message"`
		Extensions struct {
			Code  string `json:"code"`
			Field string `json:"field"`
		} `json:"extensions"`
	} `json:"errors"`
}

func (c *Client) do(ctx context.Context, rq request) error {
	start := time.Now()
	r := c.r.R().SetContext(ctx)
	if rq.query != nil {
		r.SetQueryParamsFromValues(rq.query)
	}
	if rq.body != nil {
		r.SetHeader("Content-Type", "application/json").SetBody(rq.body)
	}
	resp, err := r.Execute(rq.method, rq.path)
	status := 0
	if resp != nil && resp.RawResponse != nil {
		status = resp.StatusCode()
	}
	if c.observe != nil {
		c.observe(rq.op, status, time.Since(start))
	}
	if err != nil {
		return &APIError{Op: rq.op, Status: 0, Code: CodeUnreachable, Message: redact(err.Error(), rq.secrets)}
	}
	var env envelope
	body := resp.Body()
	if len(body) > 0 {
		if jerr := json.Unmarshal(body, &env); jerr != nil {
			if status >= 200 && status < 300 {
				return &APIError{Op: rq.op, Status: status, Code: CodeMalformed, Message: "response is not JSON"}
			}
			env = envelope{} // e.g. an HTML page from a proxy
		}
	}
	if status < 200 || status >= 300 {
		e := &APIError{Op: rq.op, Status: status, RetryAfter: parseRetryAfter(resp.Header().Get("Retry-After"))}
		if len(env.Errors) > 0 {
			e.Code = env.Errors[0].Extensions.Code
			e.Field = env.Errors[0].Extensions.Field
			e.Message = redact(env.Errors[0].Message, rq.secrets)
		} else {
			e.Message = http.StatusText(status)
		}
		return e
	}
	if rq.out != nil {
		if status == http.StatusNoContent {
			return ErrNotFound // a write that matched no item
		}
		if len(env.Data) == 0 {
			return &APIError{Op: rq.op, Status: status, Code: CodeMalformed, Message: "response has no data"}
		}
		if err := json.Unmarshal(env.Data, rq.out); err != nil {
			return &APIError{Op: rq.op, Status: status, Code: CodeMalformed, Message: "unexpected data shape: " + err.Error()}
		}
	}
	return nil
}

// redact replaces every secret in s with a fixed marker.
func redact(s string, secrets []string) string {
	for _, v := range secrets {
		if v != "" {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
	}
	return s
}

// Ping calls the public GET /server/ping.
func (c *Client) Ping(ctx context.Context) error {
	resp, err := c.r.R().SetContext(ctx).Get("/server/ping")
	if err != nil {
		return &APIError{Op: "ping", Code: CodeUnreachable, Message: err.Error()}
	}
	if resp.StatusCode() != http.StatusOK || strings.TrimSpace(resp.String()) != "pong" {
		return &APIError{Op: "ping", Status: resp.StatusCode(), Code: CodeMalformed, Message: "ping did not answer pong"}
	}
	return nil
}

// Info is the part of GET /server/info the bridge reads.
type Info struct {
	Version string `json:"version"`
}

// ServerInfo reads GET /server/info (the version needs an admin token).
func (c *Client) ServerInfo(ctx context.Context) (Info, error) {
	var out Info
	err := c.do(ctx, request{op: "server_info", method: http.MethodGet, path: "/server/info", out: &out})
	return out, err
}

// Me reads the user the client's token belongs to (GET /users/me): ID,
// Status and Role. Directus answers status and role only to a user allowed
// to read them (admin or app access); a machine user without app access
// gets its ID alone. Any Me that succeeds proves the token is live.
func (c *Client) Me(ctx context.Context) (User, error) {
	var u user
	err := c.do(ctx, request{op: "users_me", method: http.MethodGet, path: "/users/me",
		query: url.Values{"fields": {"id,status,role"}}, out: &u})
	return u.toUser(), err
}

type discardLogger struct{}

func (discardLogger) Errorf(string, ...any) {}
func (discardLogger) Warnf(string, ...any)  {}
func (discardLogger) Debugf(string, ...any) {}
