package devices_test

import "time"

func timeAt(ms int64) time.Time { return time.UnixMilli(ms) }
