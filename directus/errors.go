package directus

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Error codes Directus puts in extensions.code, plus two of the client's own.
const (
	CodeRecordNotUnique    = "RECORD_NOT_UNIQUE"
	CodeForbidden          = "FORBIDDEN"
	CodeInvalidPayload     = "INVALID_PAYLOAD"
	CodeInvalidQuery       = "INVALID_QUERY"
	CodeInvalidCredentials = "INVALID_CREDENTIALS"
	CodeRequestsExceeded   = "REQUESTS_EXCEEDED"
	CodeServiceUnavailable = "SERVICE_UNAVAILABLE"

	// CodeUnreachable marks a transport failure: no HTTP answer at all.
	CodeUnreachable = "UNREACHABLE"
	// CodeMalformed marks an answer the client could not understand.
	CodeMalformed = "MALFORMED_RESPONSE"
)

// ErrNotFound is returned by User when no user has the id.
var ErrNotFound = errors.New("directus: not found")

// APIError is a failed Directus call. Message never holds a secret that the
// request carried.
type APIError struct {
	Op         string // the client operation, e.g. "create_user"
	Status     int    // HTTP status, 0 when Directus was not reached
	Code       string // extensions.code, or CodeUnreachable / CodeMalformed
	Field      string // extensions.field, when Directus names one
	Message    string
	RetryAfter time.Duration // from a Retry-After header, when sent
}

func (e *APIError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("directus: %s: %s: %s", e.Op, e.Code, e.Message)
	}
	return fmt.Sprintf("directus: %s: HTTP %d %s: %s", e.Op, e.Status, e.Code, e.Message)
}

// Is lets errors.Is(err, ErrConflict) and errors.Is(err, ErrUnavailable) match.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrConflict:
		return e.Code == CodeRecordNotUnique
	case ErrUnavailable:
		return e.Unavailable()
	}
	return false
}

// Unavailable reports whether the failure is Directus's state rather than the
// request's: unreachable, malformed answers, 429 and 5xx. Callers answer
// those with 503 and Retry-After.
func (e *APIError) Unavailable() bool {
	return e.Status == 0 || e.Code == CodeMalformed || e.Status == http.StatusTooManyRequests || e.Status >= 500
}

var (
	// ErrConflict matches an *APIError with code RECORD_NOT_UNIQUE.
	ErrConflict = errors.New("directus: record not unique")
	// ErrUnavailable matches an *APIError for which Unavailable is true.
	ErrUnavailable = errors.New("directus: unavailable")
)

// Code returns the Directus error code of err, or "".
func Code(err error) string {
	var e *APIError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
