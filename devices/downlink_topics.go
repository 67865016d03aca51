package devices

import (
	"strconv"
	"strings"
)

// ThingsBoard's device topics, for a device that authenticated with its
// token ("me" is that device): RPC requests and answers, attributes both
// ways, attribute requests and answers.
const (
	TBRPCRequest        = "v1/devices/me/rpc/request/"
	TBRPCResponse       = "v1/devices/me/rpc/response/"
	TBAttributes        = "v1/devices/me/attributes"
	TBAttributeRequest  = "v1/devices/me/attributes/request/"
	TBAttributeResponse = "v1/devices/me/attributes/response/"
)

// ParseCommandResponse parses an answer topic: the device and command id, for
// devices/X/commands/N/response (X must be self when the client
// authenticated) and, for a device that did, ThingsBoard's
// v1/devices/me/rpc/response/N.
func ParseCommandResponse(self, topic string) (device string, id int64, ok bool) {
	if n, found := strings.CutPrefix(topic, TBRPCResponse); found {
		id, err := strconv.ParseInt(n, 10, 64)
		return self, id, self != "" && err == nil && id > 0
	}
	rest, found := strings.CutPrefix(topic, "devices/")
	if !found {
		return "", 0, false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 || parts[1] != "commands" || parts[3] != "response" || ValidateDeviceID(parts[0]) != nil {
		return "", 0, false
	}
	id, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || id <= 0 || (self != "" && parts[0] != self) {
		return "", 0, false
	}
	return parts[0], id, true
}

// ParseAttributeTopic parses a publish about attributes: a report (request
// false) or a ThingsBoard request (n its number). self is the device the
// client authenticated as, "" for none.
func ParseAttributeTopic(self, topic string) (device string, request bool, n string, ok bool) {
	if self != "" {
		if topic == TBAttributes {
			return self, false, "", true
		}
		if n, found := strings.CutPrefix(topic, TBAttributeRequest); found && n != "" && !strings.Contains(n, "/") && len(n) <= 20 {
			return self, true, n, true
		}
	}
	rest, found := strings.CutPrefix(topic, "devices/")
	if !found {
		return "", false, "", false
	}
	device, tail, found := strings.Cut(rest, "/")
	if !found || tail != "attributes" || ValidateDeviceID(device) != nil || (self != "" && device != self) {
		return "", false, "", false
	}
	return device, false, "", true
}
