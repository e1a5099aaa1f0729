import Foundation
import MTASTSCore

/// Input files: a path, `-` for standard input; directories are walked (sorted, recursive).
public enum InputFiles {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public static func read(_ path: String, maxSize: Int) throws -> [UInt8] {
        // Standard input is read like a file, against the limit while it streams: never whole first.
        if path == "-" { return try read(fd: 0, name: "standard input", maxSize: maxSize) }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let why = errno == ENOENT ? "no such file" : String(cString: strerror(errno))
            throw Failure(description: "\(path): cannot open (\(why))")
        }
        defer { close(fd) }
        return try read(fd: fd, name: path, maxSize: maxSize)
    }

    static func read(fd: Int32, name path: String, maxSize: Int) throws -> [UInt8] {
        var st = stat()
        let known = fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
        let hint = known && st.st_size > 0 ? Int(st.st_size) : 65_536
        var bytes = [UInt8](repeating: 0, count: min(hint, maxSize) + 1)
        var count = 0
        while true {
            if count == bytes.count {
                guard bytes.count <= maxSize else { break }
                bytes += [UInt8](repeating: 0, count: min(bytes.count, maxSize + 1 - bytes.count))
            }
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "\(path): cannot read (\(String(cString: strerror(errno))))")
            }
            if n == 0 { break }
            count += n
            // A regular file read to the size fstat gave, with room left over: that was its end
            // (no second read to be told so). A file still growing is read to where it was.
            if known && count == hint && count < bytes.count { break }
        }
        guard count <= maxSize else { throw Failure(description: "\(path): larger than \(maxSize) bytes") }
        bytes.removeSubrange(count...)
        return bytes
    }

    public static func expand(_ paths: [String]) -> [String] {
        var out: [String] = []
        for path in paths {
            var st = stat()
            if path != "-", stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
                walk(path, into: &out)
            } else {
                out.append(path)
            }
        }
        return out
    }

    /// Regular files below a directory, sorted by name at each level (readdir, no Foundation).
    private static func walk(_ dir: String, into out: inout [String]) {
        guard let handle = opendir(dir) else { return }
        var entries: [(name: String, isDir: Bool)] = []
        while let entry = readdir(handle) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            var isDir = entry.pointee.d_type == DT_DIR
            if entry.pointee.d_type == DT_UNKNOWN || entry.pointee.d_type == DT_LNK {
                var st = stat()
                isDir = stat(dir + "/" + name, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
            }
            entries.append((name, isDir))
        }
        closedir(handle)
        let base = dir.hasSuffix("/") ? dir : dir + "/"
        for entry in entries.sorted(by: { $0.name < $1.name }) {
            if entry.isDir { walk(base + entry.name, into: &out) } else { out.append(base + entry.name) }
        }
    }
}

/// Lines of a file descriptor with their start offsets, read in 1 MiB blocks (a line keeps its LF).
public struct LineReader {
    public let fd: Int32
    public private(set) var offset: Int64
    private var buffer: [UInt8] = []
    private var position = 0
    private var eof = false

    public init(fd: Int32, offset: Int64) {
        self.fd = fd
        self.offset = offset
    }

    public mutating func next() -> (ArraySlice<UInt8>, Int64)? {
        while true {
            if let nl = buffer[position...].firstIndex(of: 0x0A) {
                let line = buffer[position...nl]
                let start = offset
                offset += Int64(line.count)
                position = nl + 1
                return (line, start)
            }
            if eof {
                guard position < buffer.count else { return nil }
                let line = buffer[position...]
                let start = offset
                offset += Int64(line.count)
                position = buffer.count
                return (line, start)
            }
            buffer.removeSubrange(0..<position)
            position = 0
            var block = [UInt8](repeating: 0, count: 1 << 20)
            let n = block.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { eof = true } else { buffer += block[0..<n] }
        }
    }
}


/// Lines of a growing log file; notices rotation (a new file under the name).
public struct LogTail {
    public let path: String
    var handle: FileHandle
    var inode: UInt64
    var pending: [UInt8] = []

    public init(path: String) throws {
        self.path = path
        guard let h = FileHandle(forReadingAtPath: path) else { throw InputFiles.Failure(description: "\(path): cannot open") }
        handle = h
        inode = Self.inode(path)
    }

    static func inode(_ path: String) -> UInt64 {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_ino) : 0
    }

    public mutating func next() -> String? {
        while true {
            if let nl = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[..<nl], as: UTF8.self)
                pending.removeSubrange(...nl)
                return line
            }
            let data = handle.readData(ofLength: 1 << 20)
            if data.isEmpty { return nil }
            pending += data
            if pending.count > 1 << 20 && !pending.contains(0x0A) { pending.removeAll() }  // no line is this long
        }
    }

    public mutating func reopenIfRotated() {
        let now = Self.inode(path)
        guard now != 0, now != inode, let h = FileHandle(forReadingAtPath: path) else { return }
        // The old file was read to its end just before this call.
        try? handle.close()
        handle = h
        inode = now
    }
}

extension InputFiles.Failure: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.invalidInput, description) }
}
