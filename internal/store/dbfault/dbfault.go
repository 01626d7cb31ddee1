// Package dbfault tells a database that is away or too slow from any other error: the API and the
// web pages answer the first with 503 and Retry-After. It is a leaf, so that every layer can use it.
package dbfault

import (
	"context"
	"database/sql/driver"
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrUnavailable marks an error of a database that is away or too slow: a request that meets it is
// answered 503 with Retry-After, and tried again later by whoever asked.
var ErrUnavailable = errors.New("database unavailable")

// Unavailable says whether err is the database being away or too slow rather than a fault of the
// request or of Keyward: a statement cut by statement_timeout, a server shutting down or starting,
// a connection refused or lost.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, driver.ErrBadConn) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "57014", // query_canceled (statement_timeout)
			"57P01", "57P02", "57P03", // admin_shutdown, crash_shutdown, cannot_connect_now
			"08000", "08003", "08006", "08001", "08004": // connection exceptions
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) && !errors.Is(err, context.Canceled)
}
