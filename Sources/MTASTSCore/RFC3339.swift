/// RFC 3339 §5.6 date-times as Unix seconds, without Foundation's formatters (fast, and strict about
/// what it accepts, tolerant where real senders deviate: a missing zone is read as UTC and reported).
public enum RFC3339 {
    public struct Parsed: Sendable, Equatable {
        /// Seconds since 1970-01-01T00:00:00Z.
        public var seconds: Int64
        /// The text had no `Z` or offset; it was read as UTC.
        public var hadNoZone: Bool
    }

    /// Parses `YYYY-MM-DD[Tt ]HH:MM:SS[.frac](Z|z|±HH:MM)`; also a bare `YYYY-MM-DD` (midnight UTC,
    /// flagged as zone-less). Returns nil for anything else or an impossible date.
    public static func parse(_ text: String) -> Parsed? {
        let b = Array(text.utf8)
        func num(_ at: Int, _ n: Int) -> Int? {
            guard at + n <= b.count else { return nil }
            var v = 0
            for k in at..<(at + n) {
                guard b[k] >= 0x30 && b[k] <= 0x39 else { return nil }
                v = v * 10 + Int(b[k] - 0x30)
            }
            return v
        }
        guard let year = num(0, 4), b.count >= 10, b[4] == 0x2D, let month = num(5, 2), b[7] == 0x2D,
            let day = num(8, 2)
        else { return nil }
        guard month >= 1 && month <= 12 && day >= 1 && day <= daysIn(month: month, year: year) else { return nil }
        if b.count == 10 {
            return Parsed(seconds: epochDays(year, month, day) * 86_400, hadNoZone: true)
        }
        guard b.count >= 19, b[10] == 0x54 || b[10] == 0x74 || b[10] == 0x20, let hour = num(11, 2), b[13] == 0x3A,
            let minute = num(14, 2), b[16] == 0x3A, let second = num(17, 2),
            hour < 24, minute < 60, second <= 60
        else { return nil }
        var i = 19
        if i < b.count && b[i] == 0x2E {
            i += 1
            let f = i
            while i < b.count && b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
            guard i > f else { return nil }
        }
        var offset = 0
        var noZone = false
        if i == b.count {
            noZone = true
        } else if b[i] == 0x5A || b[i] == 0x7A {
            i += 1
        } else if b[i] == 0x2B || b[i] == 0x2D {
            guard let oh = num(i + 1, 2), i + 3 < b.count, b[i + 3] == 0x3A, let om = num(i + 4, 2), oh < 24, om < 60
            else { return nil }
            offset = (oh * 3600 + om * 60) * (b[i] == 0x2D ? -1 : 1)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        let secs = epochDays(year, month, day) * 86_400 + Int64(hour * 3600 + minute * 60 + min(second, 59)) - Int64(offset)
        return Parsed(seconds: secs, hadNoZone: noZone)
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`.
    public static func format(_ seconds: Int64) -> String {
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let rem = Int(seconds - days * 86_400)
        let (y, m, d) = civil(fromDays: days)
        func p2(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        var year = String(y)
        while year.count < 4 { year = "0" + year }
        return "\(year)-\(p2(m))-\(p2(d))T\(p2(rem / 3600)):\(p2(rem % 3600 / 60)):\(p2(rem % 60))Z"
    }

    /// `YYYY-MM-DD` of the UTC day.
    public static func formatDay(_ seconds: Int64) -> String { String(format(seconds).prefix(10)) }

    static func isLeap(_ y: Int) -> Bool { (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 }
    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    public static func epochDays(_ year: Int, _ month: Int, _ day: Int) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return Int64(era * 146_097 + doe - 719_468)
    }

    static func civil(fromDays z0: Int64) -> (Int, Int, Int) {
        let z = Int(z0) + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
