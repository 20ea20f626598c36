package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/shardhub/shardhub/shard/frame"
)

// RequestType is the kind of a client request.
type RequestType uint8

// Client request types of the default protocol (docs/protocol.md).
const (
	RequestSubscribe RequestType = iota + 1
	RequestUnsubscribe
	RequestPublish
	RequestSend
)

// String returns the protocol name of t.
func (t RequestType) String() string {
	switch t {
	case RequestSubscribe:
		return "subscribe"
	case RequestUnsubscribe:
		return "unsubscribe"
	case RequestPublish:
		return "publish"
	case RequestSend:
		return "send"
	}
	return "unknown"
}

// Request is one decoded client message.
type Request struct {
	Type    RequestType
	ID      []byte // the client's correlation id, raw JSON (number or string); echoed in replies
	Channel string // subscribe, unsubscribe, publish
	To      string // send: target connection id
	Data    []byte // publish, send: the payload, raw JSON
	Since   string // subscribe: recover publications after this offset
	// HasSince reports whether the client asked for recovery (Since may be "").
	HasSince bool
}

// ReplyType is the kind of a server reply to a request.
type ReplyType uint8

// Server reply types of the default protocol.
const (
	ReplySubscribed ReplyType = iota + 1
	ReplyUnsubscribed
	ReplyAck
	ReplyError
)

// Reply is a server answer to one request.
type Reply struct {
	Type    ReplyType
	ID      []byte // the request's id, raw JSON; omitted when empty
	Channel string
	// Offset is, for subscribed, the channel's current offset when history is on.
	Offset string
	// Recovered is set on subscribed when the client asked for recovery: true when
	// every missed publication follows, false when they could not be recovered
	// and the client must resync from its source of truth.
	Recovered *bool
	Code      ErrorCode // error
	Reason    string    // error
}

// ErrorCode is the machine-readable code of an error reply.
type ErrorCode string

// Error codes sent in error replies (docs/protocol.md lists when each is used).
const (
	CodeBadJSON     ErrorCode = "bad_json"
	CodeUnknownType ErrorCode = "unknown_type"
	CodeBadRequest  ErrorCode = "bad_request"
	CodeBadChannel  ErrorCode = "bad_channel"
	CodeTooLarge    ErrorCode = "too_large"
	CodeForbidden   ErrorCode = "forbidden"
	CodeNotFound    ErrorCode = "not_found"
	CodeRateLimited ErrorCode = "rate_limited"
	CodeTooManySubs ErrorCode = "too_many_subscriptions"
	// CodeTooManyChannels refuses a subscription that would create a channel
	// past Config.MaxChannels.
	CodeTooManyChannels ErrorCode = "too_many_channels"
	CodeOverloaded      ErrorCode = "overloaded"
	CodeInternal        ErrorCode = "internal"
)

// Codec is the engine's wire protocol: it decodes client requests and encodes the
// server's messages. Encoders append the message payload (not the WebSocket frame)
// to dst and return it; they are called once per message, never per recipient.
// The default is JSONCodec.
type Codec interface {
	// Decode parses one client message into req (reset by the caller). Its error
	// is sent to the client with the code returned by ErrorCodeOf.
	Decode(msg []byte, req *Request) error
	// AppendWelcome encodes the first message of a connection.
	AppendWelcome(dst []byte, connID string) []byte
	// AppendPublication encodes a channel publication; offset may be empty.
	AppendPublication(dst []byte, channel, offset string, data []byte) []byte
	// AppendBroadcast encodes a message for every connection.
	AppendBroadcast(dst []byte, data []byte) []byte
	// AppendPrivate encodes a private message; from is empty for the server.
	AppendPrivate(dst []byte, from string, data []byte) []byte
	// AppendReply encodes a reply to a request.
	AppendReply(dst []byte, r *Reply) []byte
	// Opcode is the frame type of the encoded messages (text or binary).
	Opcode() frame.Opcode
}

// CodecError is a decoding error carrying the code sent to the client.
type CodecError struct {
	Code   ErrorCode
	Reason string
}

func (e *CodecError) Error() string { return string(e.Code) + ": " + e.Reason }

// ErrorCodeOf returns the error code for err: its CodecError code, or bad_request.
func ErrorCodeOf(err error) ErrorCode {
	var ce *CodecError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return CodeBadRequest
}

// JSONCodec is the default protocol: one JSON object per text frame, described in
// docs/protocol.md. Data fields are embedded verbatim when they are valid JSON and
// as a JSON string otherwise, so a payload is never re-encoded per recipient.
type JSONCodec struct{}

var _ Codec = JSONCodec{}

type jsonRequest struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id"`
	Channel string          `json:"channel"`
	To      string          `json:"to"`
	Data    json.RawMessage `json:"data"`
	Since   *string         `json:"since"`
}

// maxIDLength bounds the request id a reply echoes.
const maxIDLength = 128

// Decode parses a JSON request.
func (JSONCodec) Decode(msg []byte, req *Request) error {
	var jr jsonRequest
	if err := json.Unmarshal(msg, &jr); err != nil {
		return &CodecError{Code: CodeBadJSON, Reason: jsonErrorReason(err)}
	}
	req.ID = jr.ID
	if len(req.ID) > 0 && req.ID[0] != '"' && (req.ID[0] < '0' || req.ID[0] > '9') && req.ID[0] != '-' {
		req.ID = nil
		return &CodecError{Code: CodeBadRequest, Reason: "id must be a number or a string"}
	}
	if len(req.ID) > maxIDLength {
		req.ID = nil
		return &CodecError{Code: CodeBadRequest, Reason: "id longer than 128 bytes"}
	}
	if !utf8.Valid(req.ID) {
		// The id is echoed in a text frame: invalid bytes (in a binary frame's
		// string) become U+FFFD, as in data.
		req.ID = bytes.ToValidUTF8(req.ID, []byte("\\ufffd"))
	}
	switch jr.Type {
	case "subscribe":
		req.Type = RequestSubscribe
	case "unsubscribe":
		req.Type = RequestUnsubscribe
	case "publish":
		req.Type = RequestPublish
	case "send":
		req.Type = RequestSend
	case "":
		return &CodecError{Code: CodeBadRequest, Reason: `missing "type"`}
	default:
		return &CodecError{Code: CodeUnknownType, Reason: fmt.Sprintf("unknown type %q", truncate(jr.Type, 64))}
	}
	req.Channel, req.To, req.Data = jr.Channel, jr.To, jr.Data
	if jr.Since != nil {
		req.Since, req.HasSince = *jr.Since, true
	}
	switch req.Type {
	case RequestSubscribe, RequestUnsubscribe:
		if req.Channel == "" {
			return &CodecError{Code: CodeBadRequest, Reason: `missing "channel"`}
		}
	case RequestPublish:
		if req.Channel == "" {
			return &CodecError{Code: CodeBadRequest, Reason: `missing "channel"`}
		}
		if len(req.Data) == 0 {
			return &CodecError{Code: CodeBadRequest, Reason: `missing "data"`}
		}
	case RequestSend:
		if req.To == "" {
			return &CodecError{Code: CodeBadRequest, Reason: `missing "to"`}
		}
		if len(req.Data) == 0 {
			return &CodecError{Code: CodeBadRequest, Reason: `missing "data"`}
		}
	}
	return nil
}

// jsonErrorReason says what is wrong with a message in the protocol's terms:
// encoding/json's own texts name Go types, which are none of the client's
// business.
func jsonErrorReason(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ) && typ.Field != "":
		// Only string fields can have the wrong type: id and data take any
		// JSON value.
		return fmt.Sprintf("%q must be a string", truncate(typ.Field, 64))
	case errors.As(err, &typ):
		return "message is not a JSON object"
	}
	return "invalid JSON"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// AppendWelcome encodes {"type":"welcome","conn":ID}.
func (JSONCodec) AppendWelcome(dst []byte, connID string) []byte {
	dst = append(dst, `{"type":"welcome","conn":`...)
	dst = appendJSONString(dst, connID)
	return append(dst, '}')
}

// AppendPublication encodes {"type":"message","channel":C,"offset":O,"data":D}.
func (JSONCodec) AppendPublication(dst []byte, channel, offset string, data []byte) []byte {
	dst = append(dst, `{"type":"message","channel":`...)
	dst = appendJSONString(dst, channel)
	if offset != "" {
		dst = append(dst, `,"offset":`...)
		dst = appendJSONString(dst, offset)
	}
	dst = append(dst, `,"data":`...)
	dst = AppendJSONValue(dst, data)
	return append(dst, '}')
}

// AppendBroadcast encodes {"type":"message","data":D}.
func (JSONCodec) AppendBroadcast(dst []byte, data []byte) []byte {
	dst = append(dst, `{"type":"message","data":`...)
	dst = AppendJSONValue(dst, data)
	return append(dst, '}')
}

// AppendPrivate encodes {"type":"private","from":F,"data":D}.
func (JSONCodec) AppendPrivate(dst []byte, from string, data []byte) []byte {
	dst = append(dst, `{"type":"private"`...)
	if from != "" {
		dst = append(dst, `,"from":`...)
		dst = appendJSONString(dst, from)
	}
	dst = append(dst, `,"data":`...)
	dst = AppendJSONValue(dst, data)
	return append(dst, '}')
}

// AppendReply encodes subscribed, unsubscribed, ack and error replies.
func (JSONCodec) AppendReply(dst []byte, r *Reply) []byte {
	switch r.Type {
	case ReplySubscribed:
		dst = append(dst, `{"type":"subscribed"`...)
	case ReplyUnsubscribed:
		dst = append(dst, `{"type":"unsubscribed"`...)
	case ReplyAck:
		dst = append(dst, `{"type":"ack"`...)
	default:
		dst = append(dst, `{"type":"error"`...)
	}
	if len(r.ID) > 0 {
		dst = append(dst, `,"id":`...)
		dst = append(dst, r.ID...)
	}
	if r.Channel != "" {
		dst = append(dst, `,"channel":`...)
		dst = appendJSONString(dst, r.Channel)
	}
	if r.Offset != "" {
		dst = append(dst, `,"offset":`...)
		dst = appendJSONString(dst, r.Offset)
	}
	if r.Recovered != nil {
		dst = append(dst, `,"recovered":`...)
		dst = strconv.AppendBool(dst, *r.Recovered)
	}
	if r.Type == ReplyError {
		dst = append(dst, `,"code":`...)
		dst = appendJSONString(dst, string(r.Code))
		dst = append(dst, `,"reason":`...)
		dst = appendJSONString(dst, r.Reason)
	}
	return append(dst, '}')
}

// Opcode returns frame.OpText.
func (JSONCodec) Opcode() frame.Opcode { return frame.OpText }

// AppendJSONValue appends data verbatim when it is one valid JSON value, and as a
// JSON string otherwise (so plain text published over HTTP stays valid JSON).
//
// Invalid UTF-8 never reaches the output (it is sent in text frames, which a
// browser must close with 1007 otherwise): inside a valid JSON value it can
// only sit in a string, where each invalid sequence becomes U+FFFD; in plain
// data appendJSONString replaces it the same way.
func AppendJSONValue(dst, data []byte) []byte {
	if t := bytes.TrimSpace(data); len(t) > 0 && json.Valid(t) {
		if utf8.Valid(t) {
			return append(dst, t...)
		}
		return append(dst, bytes.ToValidUTF8(t, []byte("\ufffd"))...)
	}
	return appendJSONString(dst, string(data))
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaping what RFC 8259 requires and
// replacing invalid UTF-8 with U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
