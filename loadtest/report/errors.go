package report

import "errors"

// ErrSchema is returned by Decode and ReadFile for a document that is not a
// report of a schema version this package reads.
var ErrSchema = errors.New("report: unsupported schema")
