package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/shardhub/shardhub/shard"
)

// Private messages: Send from the server, `send` from a client (when allowed),
// and private messages other instances route here through a Router broker.

// Send sends data as a private message from the server to connection id, on this
// instance or, through a Router broker, on another. It returns ErrConnNotFound
// when no instance has the connection.
func (e *Engine) Send(id string, data []byte) error {
	if err := e.checkPayload(data); err != nil {
		return err
	}
	return e.sendPrivate(context.Background(), srcServer, nil, id, "", data)
}

// sendPrivate delivers a private message from `from` (empty for the server).
// target is the already resolved recipient, or nil to resolve id.
func (e *Engine) sendPrivate(ctx context.Context, src source, target *Target, id, from string, data []byte) error {
	if e.closing.Load() {
		return ErrShutdown
	}
	// The common case, a recipient on this instance, needs no Target: look it
	// up once and deliver.
	if target == nil || target.Local {
		if sc := e.shardFor(id).Lookup(id); sc != nil {
			return e.deliverPrivate(src, sc, from, data)
		}
		if target != nil {
			return ErrConnNotFound // it was here when resolved and has left
		}
		t, err := e.resolve(ctx, id)
		if err != nil {
			return err
		}
		if t.Local { // registered between the two lookups
			return e.sendPrivate(ctx, src, t, id, from, data)
		}
		target = t
	}
	e.ledger.received[src].Add(1)
	if err := e.router.SendTo(ctx, target.Instance, id, from, data); err != nil {
		e.ledger.drop(DropBrokerUnavailable)
		return err
	}
	e.ledger.forwarded.Add(1)
	e.metrics.privates.Inc()
	return nil
}

// deliverPrivate encodes a private message once and queues it on sc.
func (e *Engine) deliverPrivate(src source, sc *shard.Conn, from string, data []byte) error {
	e.ledger.received[src].Add(1)
	f := e.encode(len(data)+len(from)+40, func(b []byte) []byte { return e.codec.AppendPrivate(b, from, data) })
	err := sc.TrySend(f)
	f.Release()
	switch {
	case errors.Is(err, shard.ErrInboxFull):
		e.ledger.drop(DropQueueFull)
		return ErrQueueFull
	case err != nil:
		e.ledger.drop(DropConnClosed)
		return fmt.Errorf("%w: %v", ErrConnNotFound, err)
	}
	e.ledger.fannedOut.Add(1)
	e.metrics.privates.Inc()
	return nil
}

// IsLocal reports whether connection id is on this instance.
func (e *Engine) IsLocal(id string) bool { return e.shardFor(id).Lookup(id) != nil }

// resolve finds the connection a private message to id would reach.
func (e *Engine) resolve(ctx context.Context, id string) (*Target, error) {
	if sc := e.shardFor(id).Lookup(id); sc != nil {
		t := &Target{ID: id, Instance: e.idPrefix, Local: true}
		if c, ok := sc.Value.(*Conn); ok {
			t.UserID = c.user
		}
		return t, nil
	}
	if e.router == nil {
		return nil, ErrConnNotFound
	}
	inst, err := e.router.Locate(ctx, id)
	if err != nil {
		return nil, err
	}
	if inst == e.idPrefix {
		return nil, ErrConnNotFound // registry lag: it was here and has left
	}
	return &Target{ID: id, Instance: inst}, nil
}
