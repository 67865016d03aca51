package devices

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"time"
)

// CommandStatus is where a command is in its life.
type CommandStatus string

// A command goes queued (its device is not listening) -> sent (published to
// the device) -> delivered (the device's PUBACK) -> replied, or ends
// expired, failed (the device answered with an error, or the hub gave up)
// or cancelled. A one-way command ends at delivered.
const (
	CommandQueued    CommandStatus = "queued"
	CommandSent      CommandStatus = "sent"
	CommandDelivered CommandStatus = "delivered"
	CommandReplied   CommandStatus = "replied"
	CommandExpired   CommandStatus = "expired"
	CommandFailed    CommandStatus = "failed"
	CommandCancelled CommandStatus = "cancelled"
)

// CommandStatuses lists every status, in life order.
var CommandStatuses = []CommandStatus{CommandQueued, CommandSent, CommandDelivered, CommandReplied, CommandExpired, CommandFailed, CommandCancelled}

// Final reports whether nothing follows s.
func (s CommandStatus) Final() bool {
	switch s {
	case CommandReplied, CommandExpired, CommandFailed, CommandCancelled:
		return true
	}
	return false
}

// ParseCommandStatus returns the status named s, or ErrInvalid.
func ParseCommandStatus(s string) (CommandStatus, error) {
	for _, st := range CommandStatuses {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("%w: unknown command status %q", ErrInvalid, s)
}

// Command is a request to one device (an RPC), stored with its answer and
// every change of its status.
type Command struct {
	ID     int64           `json:"id"`
	Device string          `json:"device"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	// Oneway commands expect no answer: they end at delivered.
	Oneway bool          `json:"oneway"`
	Status CommandStatus `json:"status"`
	// Created, Expires and Updated are Unix ms.
	Created int64 `json:"created"`
	Expires int64 `json:"expires"`
	Updated int64 `json:"updated"`
	// Response is the device's answer (replied or failed), as it sent it.
	Response json.RawMessage `json:"response,omitempty"`
	// Error says why a command failed.
	Error string `json:"error,omitempty"`
	// History lists every status change, oldest first.
	History []CommandEvent `json:"history"`
}

// CommandEvent is one status change of a command.
type CommandEvent struct {
	Status CommandStatus `json:"status"`
	At     int64         `json:"at"`
	Note   string        `json:"note,omitempty"`
}

// Limits of what a command carries.
const (
	// MaxCommandParams is the largest params JSON accepted, in bytes (the
	// API takes request bodies of up to 64 KiB).
	MaxCommandParams = 48 << 10
	// MaxCommandResponse is the largest answer kept, in bytes; a longer
	// one fails the command.
	MaxCommandResponse = 64 << 10
	// MaxCommandTimeout is the longest a command may wait for its device.
	MaxCommandTimeout = 30 * 24 * time.Hour
	// DefaultCommandTimeout applies when a request names none.
	DefaultCommandTimeout = 30 * time.Second
)

var methodRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// CommandRequest is what a user asks a device to do.
type CommandRequest struct {
	Method string
	Params json.RawMessage
	// Timeout is how long the command may take to be answered (or, one
	// way, delivered), from now.
	Timeout time.Duration
	Oneway  bool
}

// Validate checks r, filling in defaults; errors wrap ErrInvalid.
func (r *CommandRequest) Validate() error {
	if !methodRE.MatchString(r.Method) {
		return fmt.Errorf("%w: method must be 1-64 letters, digits or _.:-", ErrInvalid)
	}
	if len(bytes.TrimSpace(r.Params)) == 0 {
		r.Params = json.RawMessage(`{}`)
	}
	if len(r.Params) > MaxCommandParams {
		return fmt.Errorf("%w: params larger than %d bytes", ErrInvalid, MaxCommandParams)
	}
	if !json.Valid(r.Params) {
		return fmt.Errorf("%w: params must be JSON", ErrInvalid)
	}
	var compact bytes.Buffer
	json.Compact(&compact, r.Params)
	r.Params = compact.Bytes()
	if r.Timeout == 0 {
		r.Timeout = DefaultCommandTimeout
	}
	if r.Timeout < time.Second || r.Timeout > MaxCommandTimeout {
		return fmt.Errorf("%w: timeout must be between 1s and %v", ErrInvalid, MaxCommandTimeout)
	}
	return nil
}

// CommandFilter selects a device's commands, newest first.
type CommandFilter struct {
	Device string
	// Status, when set, keeps only commands in it.
	Status CommandStatus
	// Before, when positive, continues a listing below this command id.
	Before int64
	Limit  int
}

// CommandStore keeps commands. Every status change is a compare-and-set:
// it happens only from the statuses given, so that concurrent hubs and
// late acknowledgements never move a command backwards.
type CommandStore interface {
	// CreateCommand stores a new queued command and returns it with its id.
	CreateCommand(ctx context.Context, c Command) (*Command, error)
	// Command returns one of a device's commands, or ErrNotFound.
	Command(ctx context.Context, device string, id int64) (*Command, error)
	// ListCommands returns a device's commands, newest first.
	ListCommands(ctx context.Context, f CommandFilter) ([]Command, error)
	// PendingCommands returns a device's commands still to deliver (queued
	// or sent) that have not expired by now, oldest first.
	PendingCommands(ctx context.Context, device string, now int64) ([]Command, error)
	// CountPending returns how many of a device's commands are not final.
	CountPending(ctx context.Context, device string) (int, error)
	// UpdateCommand moves command id to status to, if it is in one of
	// from and belongs to device (any device for ""), with the note (and
	// the answer or error when given) recorded, and returns it without its
	// History; ok is false when it was in none of from or is another
	// device's.
	UpdateCommand(ctx context.Context, device string, id int64, from []CommandStatus, to CommandStatus, at int64, note string, response json.RawMessage, errText string) (c *Command, ok bool, err error)
	// UpdateCommandLater is UpdateCommand without waiting: the change is
	// queued now, after the caller's earlier ones, so that consecutive
	// changes of a command share a commit; wait returns its outcome.
	UpdateCommandLater(device string, id int64, from []CommandStatus, to CommandStatus, at int64, note string, response json.RawMessage, errText string) (wait func(ctx context.Context) (c *Command, ok bool, err error))
	// OpenCommands counts the commands of every device that are not
	// finished (the queue: queued, sent, or delivered and waiting for an
	// answer), by status.
	OpenCommands(ctx context.Context) (map[CommandStatus]int, error)
	// QueuedDevices returns devices that have queued commands not expired
	// by now (at most limit of them).
	QueuedDevices(ctx context.Context, now int64, limit int) ([]string, error)
	// DueCommands returns commands that are not final and expired by now.
	DueCommands(ctx context.Context, now int64, limit int) ([]Command, error)
}
