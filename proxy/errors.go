package proxy

import (
	"strconv"

	"github.com/valyala/fasthttp"
)

// proxyError is an error the proxy itself answers, in the OpenAI error shape
// {"error":{"message","type","param","code"}} that OpenAI client libraries
// parse into their API error types.
type proxyError struct {
	status  int
	errType string // OpenAI "type"
	code    string // OpenAI "code": stable, machine-readable
	message string // for people; never request content
}

var (
	errBodyTooLarge = proxyError{fasthttp.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
		"request body exceeds the proxy's limit"}
	errUpstreamUnreachable = proxyError{fasthttp.StatusBadGateway, "upstream_error", "upstream_unreachable",
		"the model server could not be reached"}
	errUpstreamTimeout = proxyError{fasthttp.StatusGatewayTimeout, "upstream_error", "upstream_timeout",
		"the model server sent nothing within the idle timeout"}
	errUpstreamBusy = proxyError{fasthttp.StatusServiceUnavailable, "upstream_error", "upstream_busy",
		"all connections to the model server are in use"}
	errRequestTimeout = proxyError{fasthttp.StatusRequestTimeout, "invalid_request_error", "request_timeout",
		"the request was not received within the idle timeout"}
	errHeaderTooLarge = proxyError{fasthttp.StatusRequestHeaderFieldsTooLarge, "invalid_request_error", "headers_too_large",
		"request headers are too large"}
	errAuditUnavailable = proxyError{fasthttp.StatusServiceUnavailable, "server_error", "audit_log_unavailable",
		"audit log unavailable: the proxy cannot record this request, so it was not run; retry later"}
	errTooManyConnections = proxyError{fasthttp.StatusServiceUnavailable, "server_error", "too_many_connections",
		"the proxy has as many client connections open as it can serve; retry later"}
	errBodiesOverBudget = proxyError{fasthttp.StatusServiceUnavailable, "server_error", "request_bodies_over_budget",
		"the proxy holds as many request bytes as its memory budget allows; retry later"}
	errBadRequest = proxyError{fasthttp.StatusBadRequest, "invalid_request_error", "malformed_request",
		"the request is not valid HTTP"}
)

// appendJSON appends the error's JSON body to dst.
func (e proxyError) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"error":{"message":`...)
	dst = strconv.AppendQuote(dst, e.message)
	dst = append(dst, `,"type":`...)
	dst = strconv.AppendQuote(dst, e.errType)
	dst = append(dst, `,"param":null,"code":`...)
	dst = strconv.AppendQuote(dst, e.code)
	return append(dst, "}}"...)
}
