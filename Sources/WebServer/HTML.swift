import Foundation

/// Server-rendered HTML for the dashboard: escaping, the page frame with its stylesheet, tables.
/// No script, no asset from elsewhere, no build step: every page is one document.
enum HTML {
    /// Text and attribute values, escaped.
    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default:
                // Control characters (other than tab and line breaks) are shown, not passed on.
                if c.value < 0x20 && c != "\n" && c != "\t" && c != "\r" || c.value == 0x7F { out += "\u{FFFD}" } else { out.unicodeScalars.append(c) }
            }
        }
        return out
    }

    /// A path segment or query value, percent-encoded.
    static func component(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? ""
    }

    static func number(_ n: Int64) -> String {
        let digits = String(n.magnitude)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (n < 0 ? "-" : "") + out
    }

    static func percent(_ rate: Double?) -> String {
        guard let rate else { return "–" }
        if rate >= 1 { return "100 %" }
        return String(format: rate >= 0.999 ? "%.2f %%" : "%.1f %%", rate * 100)
    }

    /// A table with a caption and header cells; cells are HTML already.
    static func table(caption: String, headers: [String], rows: [[String]], id: String? = nil, numeric: Set<Int> = [], narrow: Bool = false) -> String {
        var out = "<div class=\"scroll\"><table\(id.map { " id=\"\(escape($0))\"" } ?? "")\(narrow ? " class=\"narrow\"" : "")><caption>\(escape(caption))</caption><thead><tr>"
        for (i, h) in headers.enumerated() { out += "<th scope=\"col\"\(numeric.contains(i) ? " class=\"num\"" : "")>\(escape(h))</th>" }
        out += "</tr></thead><tbody>"
        if rows.isEmpty { out += "<tr><td colspan=\"\(headers.count)\">none</td></tr>" }
        for row in rows {
            out += "<tr>"
            for (i, cell) in row.enumerated() { out += i == 0 ? "<th scope=\"row\">\(cell)</th>" : "<td\(numeric.contains(i) ? " class=\"num\"" : "")>\(cell)</td>" }
            out += "</tr>"
        }
        return out + "</tbody></table></div>"
    }

    /// A verdict or state as a badge: a word and a symbol, so it reads without colour.
    static func badge(_ kind: String, _ label: String) -> String {
        let symbol: String
        switch kind {
        case "good": symbol = "✓"
        case "bad": symbol = "✗"
        case "warn": symbol = "!"
        default: symbol = "?"
        }
        return "<span class=\"badge \(kind)\"><span aria-hidden=\"true\">\(symbol)</span> \(escape(label))</span>"
    }

    static func link(_ href: String, _ text: String) -> String { "<a href=\"\(escape(href))\">\(escape(text))</a>" }

    /// The whole document.
    static func page(title: String, crumbs: [(String, String?)], body: String) -> String {
        let nav = crumbs.map { name, href in href.map { link($0, name) } ?? "<span aria-current=\"page\">\(escape(name))</span>" }.joined(separator: " › ")
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(escape(title)) — mtasts</title><link rel="icon" href="data:,">
            <style>\(stylesheet)</style></head>
            <body><a class="skip" href="#main">Skip to content</a>
            <header><nav aria-label="breadcrumbs">\(nav)</nav></header>
            <main id="main"><h1>\(escape(title))</h1>
            \(body)
            </main>
            <footer>mtasts · all dates and days are UTC · <a href="/api/summary">JSON API</a></footer>
            </body></html>
            """
    }

    static let stylesheet = """
        :root{--fg:#1b1f24;--muted:#57606a;--bg:#fff;--line:#d0d7de;--good:#1a7f37;--bad:#b3261e;--warn:#8a5a00;--link:#0550ae}
        *{box-sizing:border-box}body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg);margin:0}
        header,main,footer{max-width:72rem;margin:0 auto;padding:.75rem 1rem}footer{color:var(--muted);font-size:.85rem}
        h1{font-size:1.5rem;margin:.25rem 0 1rem}h2{font-size:1.15rem;margin:1.5rem 0 .5rem}
        a{color:var(--link)}a:focus,button:focus{outline:3px solid #0969da;outline-offset:2px}
        .skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:.5rem;background:#fff;padding:.25rem}
        .scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;background:linear-gradient(to left,#fff 30%,rgba(255,255,255,0)) right/2rem 100% no-repeat local,radial-gradient(farthest-side at 100% 50%,rgba(0,0,0,.18),transparent) right/.6rem 100% no-repeat scroll}
        table{border-collapse:collapse;width:100%;margin:.25rem 0 1rem}table.narrow{width:auto;min-width:min(28rem,100%)}
        caption{text-align:left;font-weight:600;padding:.25rem 0;position:sticky;left:0}table a,.nowrap{white-space:nowrap}
        th,td{border-bottom:1px solid var(--line);padding:.35rem .5rem;text-align:left;vertical-align:top}
        thead th{border-bottom:2px solid var(--fg)}.num{text-align:right;font-variant-numeric:tabular-nums}
        .badge{display:inline-block;border:1.5px solid currentColor;border-radius:.75rem;padding:0 .5rem;font-size:.85rem;white-space:nowrap;font-weight:600}
        .badge.good{color:var(--good)}.badge.bad{color:var(--bad);border-style:dashed}.badge.warn{color:var(--warn);border-style:dotted}.badge.none{color:var(--muted)}
        .muted{color:var(--muted)}pre{overflow-x:auto;background:#f6f8fa;padding:.75rem;border:1px solid var(--line);font-size:.85rem}
        svg.chart{width:100%;height:auto;max-width:60rem;display:block}svg .axis{stroke:var(--muted);stroke-width:1}svg text{font-size:11px;fill:var(--fg)}
        pre{white-space:pre-wrap;overflow-wrap:anywhere}
        .legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.75rem}.legend svg{vertical-align:middle}
        dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}dl.facts dt{font-weight:600}dl.facts dd{margin:0;overflow-wrap:anywhere}
        @media (max-width:40rem){body{font-size:14px}th,td{padding:.3rem}dl.facts{grid-template-columns:1fr}svg.chart text{font-size:22px}}
        """
}

/// Charts as SVG drawn on the server: a sparkline of daily success rates, daily bars, and failures
/// stacked by result type with a pattern for each type (readable without colour).
enum Chart {
    /// A coordinate with one decimal.
    static func f(_ v: Double) -> String {
        // Integer arithmetic: Foundation's String(format:) costs microseconds a call, and a chart has thousands.
        guard v.isFinite else { return "0" }
        let tenths = Int((v * 10).rounded())
        let sign = tenths < 0 ? "-" : ""
        return "\(sign)\(abs(tenths) / 10).\(abs(tenths) % 10)"
    }

    /// One point per day with sessions (class `point`), joined by a line; days without sessions are gaps.
    static func sparkline(_ points: [(day: String, rate: Double?)], width: Int = 120, height: Int = 28) -> String {
        let n = max(points.count, 1)
        // The scale runs from just under the lowest rate to 100 %: a 99 % day stands out from 100 %.
        let low = max(0, min(points.compactMap(\.rate).min() ?? 0.99, 0.99) - 0.01)
        func x(_ i: Int) -> Double { n == 1 ? Double(width) / 2 : 2 + Double(i) * Double(width - 4) / Double(n - 1) }
        func y(_ r: Double) -> Double { 2 + (1 - (r - low) / (1 - low)) * Double(height - 4) }
        var path = "", dots = ""
        var pen = false
        for (i, p) in points.enumerated() {
            guard let r = p.rate else { pen = false; continue }
            path += "\(pen ? "L" : "M")\(f(x(i))),\(f(y(r))) "
            pen = true
            dots += "<circle class=\"point\" cx=\"\(f(x(i)))\" cy=\"\(f(y(r)))\" r=\"1.6\" data-day=\"\(HTML.escape(p.day))\"><title>\(HTML.escape(p.day)): \(HTML.percent(r))</title></circle>"
        }
        let label = points.compactMap(\.rate).last.map { "success rate, latest " + HTML.percent($0) } ?? "no sessions"
        let axis = "<line x1=\"0\" x2=\"\(width)\" y1=\"\(height - 1)\" y2=\"\(height - 1)\" stroke=\"#d0d7de\"/><text x=\"0\" y=\"\(height - 3)\" font-size=\"7\" fill=\"#57606a\">\(HTML.percent(low))</text>"
        return "<svg class=\"spark\" role=\"img\" aria-label=\"\(HTML.escape(label))\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\">\(axis)<path d=\"\(path)\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.2\"/>\(dots)</svg>"
    }

    /// Daily success rate: one bar (class `bar`) per day with sessions, height the rate, axis 0–100 %.
    static func rateBars(_ days: [(day: String, successful: Int64, failed: Int64)], id: String) -> String {
        let w = 720, h = 200, left = 52, bottom = 28, top = 8
        let slot = Double(w - left - 8) / Double(max(days.count, 1))
        var out = "<svg id=\"\(id)\" class=\"chart\" role=\"img\" aria-labelledby=\"\(id)-t\" viewBox=\"0 0 \(w) \(h)\"><title id=\"\(id)-t\">Daily success rate (UTC days; days with failures hatched)</title>" + patternDefs()
        for pct in [0, 50, 100] {
            let y = Double(top) + (1 - Double(pct) / 100) * Double(h - top - bottom)
            out += "<line class=\"axis\" x1=\"\(left)\" x2=\"\(w - 4)\" y1=\"\(f(y))\" y2=\"\(f(y))\"/><text x=\"2\" y=\"\(f(y + 4))\">\(pct) %</text>"
        }
        for (i, d) in days.enumerated() {
            let total = d.successful.saturatingAdd(d.failed)
            guard total > 0 else { continue }
            let rate = Double(d.successful) / Double(total)
            let barH = rate * Double(h - top - bottom), x = Double(left) + Double(i) * slot + slot * 0.15
            let day = HTML.escape(d.day)
            // A day with failures is hatched red, a day without solid green: told apart without colour too.
            let fill = d.failed > 0 ? "url(#p0)" : "#1a7f37"
            out += "<rect class=\"bar\" data-day=\"\(day)\" x=\"\(f(x))\" y=\"\(f(Double(h - bottom) - barH))\" width=\"\(f(slot * 0.7))\" height=\"\(f(max(barH, 0.5)))\" fill=\"\(fill)\"><title>\(day): \(HTML.percent(rate)) of \(HTML.number(total)) sessions successful</title></rect>"
            if days.count <= 16 || i % max(1, days.count / 8) == 0 {
                out += "<text x=\"\(f(x))\" y=\"\(h - 10)\">\(HTML.escape(String(d.day.suffix(5))))</text>"
            }
        }
        return out + "</svg>"
    }

    /// Patterns for the result types, so stacked segments differ by more than colour.
    static let patterns: [(id: String, colour: String, shape: String)] = [
        ("p0", "#b3261e", "<path d=\"M0,6 L6,0\" stroke=\"#fff\" stroke-width=\"1.5\"/>"),
        ("p1", "#8a5a00", "<circle cx=\"3\" cy=\"3\" r=\"1.3\" fill=\"#fff\"/>"),
        ("p2", "#0550ae", "<path d=\"M0,3 L6,3\" stroke=\"#fff\" stroke-width=\"1.5\"/>"),
        ("p3", "#6639ba", "<path d=\"M3,0 L3,6\" stroke=\"#fff\" stroke-width=\"1.5\"/>"),
        ("p4", "#1b1f24", "<path d=\"M0,0 L6,6 M6,0 L0,6\" stroke=\"#fff\" stroke-width=\"1\"/>"),
        ("p5", "#57606a", ""),
    ]

    static func patternDefs() -> String {
        "<defs>" + patterns.map { p in
            "<pattern id=\"\(p.id)\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\"><rect width=\"6\" height=\"6\" fill=\"\(p.colour)\"/>\(p.shape)</pattern>"
        }.joined() + "</defs>"
    }

    /// Failed sessions per day (one `g.stack` per day), stacked by result type (`rect.segment`),
    /// with a legend naming each type beside its pattern.
    static func stackedFailures(days: [String], types: [String], sessions: [String: [String: Int64]], id: String) -> String {
        let w = 720, h = 200, left = 52, bottom = 28, top = 8
        let totals = days.map { day in types.reduce(Int64(0)) { $0.saturatingAdd(sessions[day]?[$1] ?? 0) } }
        let maxTotal = max(totals.max() ?? 0, 1)
        let slot = Double(w - left - 8) / Double(max(days.count, 1))
        var out = "<svg id=\"\(id)\" class=\"chart\" role=\"img\" aria-labelledby=\"\(id)-t\" viewBox=\"0 0 \(w) \(h)\"><title id=\"\(id)-t\">Failed sessions per day by result type (UTC days)</title>" + patternDefs()
        for frac in [0.0, 0.5, 1.0] {
            let y = Double(top) + (1 - frac) * Double(h - top - bottom)
            out += "<line class=\"axis\" x1=\"\(left)\" x2=\"\(w - 4)\" y1=\"\(f(y))\" y2=\"\(f(y))\"/><text x=\"2\" y=\"\(f(y + 4))\">\(HTML.number(Int64((Double(maxTotal) * frac).rounded())))</text>"
        }
        for (i, day) in days.enumerated() where totals[i] > 0 {
            let x = Double(left) + Double(i) * slot + slot * 0.15
            var y = Double(h - bottom)
            out += "<g class=\"stack\" data-day=\"\(HTML.escape(day))\">"
            for (t, type) in types.enumerated() {
                let n = sessions[day]?[type] ?? 0
                guard n > 0 else { continue }
                let segH = Double(n) / Double(maxTotal) * Double(h - top - bottom)
                y -= segH
                out += "<rect class=\"segment\" data-type=\"\(HTML.escape(type))\" x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(slot * 0.7))\" height=\"\(f(max(segH, 0.5)))\" fill=\"url(#\(patterns[t % patterns.count].id))\" stroke=\"#fff\" stroke-width=\"0.5\"><title>\(HTML.escape(day)) \(HTML.escape(type)): \(HTML.number(n)) failed</title></rect>"
            }
            out += "</g>"
            if days.count <= 16 || i % max(1, days.count / 8) == 0 {
                out += "<text x=\"\(f(x))\" y=\"\(h - 10)\">\(HTML.escape(String(day.suffix(5))))</text>"
            }
        }
        out += "</svg><ul class=\"legend\">"
        for (t, type) in types.enumerated() {
            out += "<li><svg width=\"14\" height=\"14\" aria-hidden=\"true\"><rect width=\"14\" height=\"14\" fill=\"url(#\(patterns[t % patterns.count].id))\"/></svg> \(HTML.escape(type))</li>"
        }
        return out + "</ul>"
    }
}
