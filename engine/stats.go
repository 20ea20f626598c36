package engine

// Stats is a snapshot of the engine.
type Stats struct {
	Instance       string       `json:"instance"`
	Connections    int          `json:"connections"`
	Channels       int          `json:"channels"`
	QueueLength    int          `json:"broadcast_queue_length"`
	QueueCapacity  int          `json:"broadcast_queue_capacity"`
	ClientQueue    int          `json:"client_queue_length"`
	Shards         []ShardStats `json:"shards"`
	Deliveries     int64        `json:"deliveries"` // message frames written whole to sockets
	BytesSent      int64        `json:"bytes_sent"`
	Forced         int64        `json:"forced_disconnects"`
	WriteErrors    int64        `json:"write_errors"`
	Dropped        int64        `json:"dropped_broadcasts"` // messages dropped before the fan-out (queue full, shutdown)
	Broadcasts     int64        `json:"broadcasts"`
	Publications   int64        `json:"publications"`
	Privates       int64        `json:"private_messages"`
	MessagesIn     int64        `json:"messages_in"`
	AuthDenials    int64        `json:"authorizer_denials"`
	ShuttingDown   bool         `json:"shutting_down"`
	ConnectedTotal int64        `json:"connected_total"`
	Ledger         Ledger       `json:"ledger"`
}

// ShardStats is one shard's part of Stats.
type ShardStats struct {
	Index         int   `json:"index"`
	Connections   int   `json:"connections"`
	Channels      int   `json:"channels"`
	Subscriptions int   `json:"subscriptions"`
	Broadcasts    int64 `json:"broadcasts"`
	Publications  int64 `json:"publications"`
	Privates      int64 `json:"private_messages"`
	Deliveries    int64 `json:"deliveries"`
	Forced        int64 `json:"forced_disconnects"`
	Inbox         int   `json:"inbox_length"`
}

// Stats asks every shard for a snapshot. During shutdown, stopped shards report
// their counters only.
func (e *Engine) Stats() Stats {
	st := Stats{
		Instance:      e.idPrefix,
		QueueLength:   len(e.queue),
		QueueCapacity: cap(e.queue),
		ClientQueue:   len(e.clientQueue),
		Broadcasts:    int64(e.metrics.broadcasts.Get()),
		Publications:  int64(e.metrics.publications.Get()),
		Privates:      int64(e.metrics.privates.Get()),
		MessagesIn:    int64(e.metrics.messagesIn.Get()),
		AuthDenials:   int64(e.metrics.authDenials.Get()),
		ShuttingDown:  e.closing.Load(),
	}
	e.chanMu.Lock()
	st.Channels = len(e.chans)
	e.chanMu.Unlock()
	for _, s := range e.shards {
		ss := s.Stats()
		st.Shards = append(st.Shards, ShardStats{
			Index:         ss.Index,
			Connections:   int(ss.Counters.Conns),
			Channels:      ss.Channels,
			Subscriptions: ss.Subscriptions,
			Broadcasts:    ss.Broadcasts,
			Publications:  ss.Publications,
			Privates:      ss.Privates,
			Deliveries:    ss.Counters.Written,
			Forced:        ss.Counters.Forced,
			Inbox:         s.InboxLen(),
		})
		st.Connections += int(ss.Counters.Conns)
		st.BytesSent += ss.Counters.Bytes
		st.Forced += ss.Counters.Forced
		st.WriteErrors += ss.Counters.WriteErrors
		st.ConnectedTotal += ss.Counters.Registered
	}
	st.Ledger = e.Ledger()
	st.Deliveries = int64(st.Ledger.Deliveries.Written)
	st.Dropped = int64(st.Ledger.Messages.Dropped[DropQueueFull] + st.Ledger.Messages.Dropped[DropShutdown])
	return st
}
