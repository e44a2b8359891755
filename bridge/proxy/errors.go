package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
)

// Directus error codes the proxy answers with (Directus's own, so that
// its SDKs and clients react as they do to Directus).
const (
	codeInvalidCredentials = "INVALID_CREDENTIALS"
	codeTokenExpired       = "TOKEN_EXPIRED"
	codeRequestsExceeded   = "REQUESTS_EXCEEDED"
	codeUnavailable        = "SERVICE_UNAVAILABLE"
	codeInternal           = "INTERNAL_SERVER_ERROR"
	codeInvalidPayload     = "INVALID_PAYLOAD"
)

// apiError is an answer of the proxy's own, in Directus's words.
type apiError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
}

// refusal words a refused or failed exchange as Directus would answer a
// bad credential or its own unavailability. The bridge's reason is in its
// audit line, not in the answer.
func refusal(e *bridge.Error) apiError {
	switch {
	case e.Status == http.StatusTooManyRequests:
		s := retrySeconds(e.RetryAfter)
		return apiError{Status: 429, Code: codeRequestsExceeded, RetryAfter: e.RetryAfter,
			Message: "Too many requests, retry after " + strconv.Itoa(s) + "s."}
	case e.Status >= 500 && e.Code == "temporarily_unavailable":
		return apiError{Status: 503, Code: codeUnavailable, RetryAfter: e.RetryAfter,
			Message: "Service is unavailable. " + e.Description + "."}
	case e.Status >= 500:
		return apiError{Status: 500, Code: codeInternal, Message: "An unexpected error occurred."}
	case e.SubjectExpired():
		return apiError{Status: 401, Code: codeTokenExpired, Message: "Token expired."}
	default:
		return apiError{Status: 401, Code: codeInvalidCredentials, Message: "Invalid user credentials."}
	}
}

// upstreamDown is the answer when Directus cannot be reached or does not
// answer in time.
func upstreamDown(why string) apiError {
	return apiError{Status: 503, Code: codeUnavailable, RetryAfter: 5 * time.Second,
		Message: "Service is unavailable. " + why + "."}
}

func retrySeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}

// errorBody is Directus's error document.
type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Message    string         `json:"message"`
	Extensions map[string]any `json:"extensions"`
}

// write is the one place that writes the proxy's own answers.
func (e apiError) write(w http.ResponseWriter) {
	h := w.Header()
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retrySeconds(e.RetryAfter)))
	}
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(errorBody{Errors: []errorEntry{{Message: e.Message, Extensions: map[string]any{"code": e.Code}}}})
}
