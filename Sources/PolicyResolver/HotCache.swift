import MTASTSCore
import Atomics
import NIOCore
import Metrics
import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#endif

/// The in-memory layer, read without a lock on the socketmap hit path.
///
/// Entries live as records in one mapped region (an arena): the times the hit path and refresh
/// look at, the domain, the reply rendered for one zone (a socketmap name, by its index in a
/// small table) under one configuration generation, and
/// the rest of the entry packed (`PackedEntry`; decoded only when a caller needs the whole entry).
/// An open-addressing index of 64-bit words (a tag of the domain's hash and the record's offset)
/// finds them. Writers (puts, replies kept, evictions) take `writer`; records are appended and
/// published by one atomic store of their index word, so a reader sees the old record or the new
/// one, both whole. What moves records (compaction, the index rebuilt) or rewrites a reply in
/// place makes `sequence` odd for its length: a reader that saw it change (or odd) reads again, and
/// after a few tries takes the writer's lock (a seqlock). Readers only read the region, which
/// stays mapped for the cache's life, and bound every offset by its size, so a torn read is
/// caught by the sequence and can never reach outside it. The last-use time and the "used since
/// the last flush" mark are atomics beside the index, per slot: a stale reader that stores one
/// into a slot reused meanwhile only makes another domain look used (eviction order), never a
/// wrong reply. Past its capacity the least recently used tenth leaves at once, negative entries
/// first.
final class HotCache: @unchecked Sendable {
    /// What the hit path needs: validity, whether a record check is due, the kept reply.
    struct Hit {
        var expiresAt: Double
        var checkedAt: Double
        var negative: Bool
        var reply: ByteBuffer?
    }

    let capacity: Int
    private let writer = NIOLock()
    /// Even: stable; odd: records are being moved or rewritten.
    private let sequence = ManagedAtomic<UInt64>(0)

    // The index: `slotCount` words; 0 empty, 1 removed, else tag << 40 | offset / 8. It starts
    // small and doubles while more than half full, up to `maxSlots` (twice the capacity): its
    // arrays are reserved at that size and become memory only as they are written, so a daemon
    // configured for 100,000 entries that holds 1,000 keeps an index of 2,048 slots, not 262,144
    // (4.25 MB, all written at start before).
    private let maxSlots: Int
    private let slotCountStore: ManagedAtomic<Int>
    private var slotCount: Int { slotCountStore.load(ordering: .relaxed) }
    private let slots: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>
    private let lastUsed: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>
    private let usedMarks: UnsafeMutablePointer<UnsafeAtomic<UInt8>.Storage>

    // The arena: one mapped region; records from `firstOffset` to `end`.
    private let region: UnsafeMutableRawPointer
    private let regionSize: Int
    private var end = HotCache.firstOffset
    private var liveBytes = 0
    private var liveCount = 0
    private var removedSlots = 0
    /// Moves so far (tests).
    private(set) var compactions = 0
    /// Times the index doubled (tests).
    private(set) var growths = 0

    /// The socketmap names replies were kept for (a daemon answers one or two): up to 255 of
    /// `zoneSlot` bytes each (a length byte, then the name), written once each under the writer's
    /// lock before a record names them, never changed; a record keeps 1 + the index.
    private let zoneTable: UnsafeMutableRawPointer
    private var zoneNames = 0
    static let zoneSlot = 64

    static let firstOffset = 16
    static let headerSize = 43
    static let offsetMask: UInt64 = (1 << 40) - 1

    /// `regionBytes`: the address space reserved for records (pages become memory only as they
    /// are written); by default 4 KiB per entry of capacity, at least 64 MiB.
    init(capacity: Int, regionBytes: Int? = nil) {
        self.capacity = max(1, capacity)
        var n = 16
        while n < self.capacity * 2 { n <<= 1 }
        maxSlots = n
        slotCountStore = ManagedAtomic(min(n, Self.initialSlots))
        // Zero-filled by the kernel: zero is an empty slot, an unused entry, no mark.
        slots = Self.mapZeroed(n, of: UnsafeAtomic<UInt64>.Storage.self)
        lastUsed = Self.mapZeroed(n, of: UnsafeAtomic<UInt64>.Storage.self)
        usedMarks = Self.mapZeroed(n, of: UnsafeAtomic<UInt8>.Storage.self)
        var size = regionBytes ?? max(64 << 20, self.capacity * 4096)
        var mapped: UnsafeMutableRawPointer?
        while mapped == nil {
            let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            if let p, p != UnsafeMutableRawPointer(bitPattern: -1) {
                mapped = p
            } else {
                precondition(size > 1 << 20, "cannot map memory for the policy cache")
                size /= 2
            }
        }
        region = mapped!
        regionSize = size
        zoneTable = .allocate(byteCount: 255 * Self.zoneSlot, alignment: 8)
        zoneTable.initializeMemory(as: UInt8.self, repeating: 0, count: 255 * Self.zoneSlot)
    }

    deinit {
        munmap(region, regionSize)
        zoneTable.deallocate()
        munmap(slots, maxSlots * MemoryLayout<UnsafeAtomic<UInt64>.Storage>.stride)
        munmap(lastUsed, maxSlots * MemoryLayout<UnsafeAtomic<UInt64>.Storage>.stride)
        munmap(usedMarks, maxSlots * MemoryLayout<UnsafeAtomic<UInt8>.Storage>.stride)
    }

    /// The index's size before it first grows.
    static let initialSlots = 1024

    /// `count` values of `T` in anonymous memory, all zero bytes (pages are memory once written).
    private static func mapZeroed<T>(_ count: Int, of: T.Type) -> UnsafeMutablePointer<T> {
        let p = mmap(nil, count * MemoryLayout<T>.stride, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let p, p != UnsafeMutableRawPointer(bitPattern: -1) else { fatalError("cannot map memory for the policy cache's index") }
        return p.bindMemory(to: T.self, capacity: count)
    }

    /// The index's size now (tests).
    var indexSlots: Int { writer.withLock { slotCount } }

    private func slot(_ k: Int) -> UnsafeAtomic<UInt64> { UnsafeAtomic(at: slots + k) }
    private func lastUse(_ k: Int) -> UnsafeAtomic<UInt64> { UnsafeAtomic(at: lastUsed + k) }
    private func usedMark(_ k: Int) -> UnsafeAtomic<UInt8> { UnsafeAtomic(at: usedMarks + k) }

    static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hasher = Hasher()
        hasher.combine(bytes: bytes)
        return UInt64(bitPattern: Int64(hasher.finalize()))
    }

    /// A record's fields at `offset` (the caller bounds it): the times, the reply's generation, the
    /// lengths, the reply's zone (an index into the zone table), the flags, then the domain, the
    /// reply (in room of `replyRoom` bytes)
    /// and the packed entry.
    private struct Record {
        let base: UnsafeMutableRawPointer
        var expiresAt: Double { base.loadUnaligned(as: Double.self) }
        var checkedAt: Double { base.loadUnaligned(fromByteOffset: 8, as: Double.self) }
        var fetchedAt: Double { base.loadUnaligned(fromByteOffset: 16, as: Double.self) }
        var generation: UInt32 { base.loadUnaligned(fromByteOffset: 24, as: UInt32.self) }
        var packedCount: Int { Int(base.loadUnaligned(fromByteOffset: 28, as: UInt32.self)) }
        var replyCount: Int { Int(base.loadUnaligned(fromByteOffset: 32, as: UInt32.self)) }
        var replyRoom: Int { Int(base.loadUnaligned(fromByteOffset: 36, as: UInt32.self)) }
        var domainCount: Int { Int(base.loadUnaligned(fromByteOffset: 40, as: UInt8.self)) }
        /// 0: no reply kept; else 1 + the zone's index in the table.
        var zone: Int { Int(base.loadUnaligned(fromByteOffset: 41, as: UInt8.self)) }
        var flags: UInt8 { base.loadUnaligned(fromByteOffset: 42, as: UInt8.self) }
        var negative: Bool { flags & 1 != 0 }
        var hasReply: Bool { flags & 2 != 0 }
        var domain: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base + HotCache.headerSize, count: domainCount) }
        var replyStart: Int { HotCache.headerSize + domainCount }
        var reply: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base + replyStart, count: replyCount) }
        var packed: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base + replyStart + replyRoom, count: packedCount) }
        /// Header and variable parts, rounded up to 8 bytes.
        var size: Int { HotCache.recordSize(domain: domainCount, replyRoom: replyRoom, packed: packedCount) }
        /// The domain's hash (recomputed: the index word keeps its top 24 bits).
        var hash: UInt64 { HotCache.hash(domain) }

        func setHeader(expiresAt: Double, checkedAt: Double, fetchedAt: Double, generation: UInt32, packedCount: Int, replyCount: Int,
                       replyRoom: Int, domainCount: Int, zone: Int, flags: UInt8) {
            base.storeBytes(of: expiresAt, as: Double.self)
            base.storeBytes(of: checkedAt, toByteOffset: 8, as: Double.self)
            base.storeBytes(of: fetchedAt, toByteOffset: 16, as: Double.self)
            base.storeBytes(of: generation, toByteOffset: 24, as: UInt32.self)
            base.storeBytes(of: UInt32(packedCount), toByteOffset: 28, as: UInt32.self)
            base.storeBytes(of: UInt32(replyCount), toByteOffset: 32, as: UInt32.self)
            base.storeBytes(of: UInt32(replyRoom), toByteOffset: 36, as: UInt32.self)
            base.storeBytes(of: UInt8(domainCount), toByteOffset: 40, as: UInt8.self)
            base.storeBytes(of: UInt8(zone), toByteOffset: 41, as: UInt8.self)
            base.storeBytes(of: flags, toByteOffset: 42, as: UInt8.self)
        }

        /// Was this record made from `entry` (packed as `packed`), its check time aside?
        func holds(_ entry: CacheEntry, packed: [UInt8]) -> Bool {
            fetchedAt == entry.fetchedAt && expiresAt == entry.expiresAt && negative == (entry.policy == nil) && packedCount == packed.count
                && packed.withUnsafeBytes { $0.count == 0 || memcmp($0.baseAddress!, self.packed.baseAddress!, $0.count) == 0 }
        }

        func setCheckedAt(_ t: Double) { base.storeBytes(of: t, toByteOffset: 8, as: Double.self) }

        func setReply(count: Int, generation: UInt32, zone: Int) {
            base.storeBytes(of: generation, toByteOffset: 24, as: UInt32.self)
            base.storeBytes(of: UInt8(zone), toByteOffset: 41, as: UInt8.self)
            base.storeBytes(of: UInt32(count), toByteOffset: 32, as: UInt32.self)
            base.storeBytes(of: flags | 2, toByteOffset: 42, as: UInt8.self)
        }
    }

    /// The generation as a record keeps it.
    static func generation(_ g: Int) -> UInt32 { UInt32(truncatingIfNeeded: g) }

    static func recordSize(domain: Int, replyRoom: Int, packed: Int) -> Int {
        (headerSize + domain + replyRoom + packed + 7) & ~7
    }

    // MARK: the reader

    /// What the hit path reads of an entry; `replied`: its kept reply was appended to the caller's
    /// buffer.
    struct Probe {
        var expiresAt: Double
        var checkedAt: Double
        var negative: Bool
        var replied: Bool
    }

    /// One probe of the index, no lock, no decoding of the entry: the socketmap hit path. The
    /// domain and zone are the request's bytes; the reply kept for them (this zone, this
    /// generation) is appended to `out`, nothing else is (a read that did not hold together is
    /// taken back before it is read again).
    func hit(_ name: UnsafeRawBufferPointer, zone: UnsafeRawBufferPointer, generation: Int, at now: Double, into out: inout ByteBuffer) -> Probe? {
        let h = Self.hash(name)
        let mark = out.writerIndex
        for _ in 0..<4 {
            let before = sequence.load(ordering: .acquiring)
            if before & 1 != 0 {
                sched_yield()
                continue
            }
            let (found, consistent) = probe(h, name, zone, generation, into: &out)
            atomicMemoryFence(ordering: .acquiring)
            guard consistent, sequence.load(ordering: .relaxed) == before else {
                out.moveWriterIndex(to: mark)
                continue
            }
            guard let (k, hit) = found else { return nil }
            markUsed(k, at: now)
            return hit
        }
        // Records kept moving: read under the writer's lock (nothing moves then).
        return writer.withLock {
            guard let (k, hit) = probe(h, name, zone, generation, into: &out).found else { return nil }
            markUsed(k, at: now)
            return hit
        }
    }

    /// `hit` for text (tests, callers off the hit path): the kept reply as a buffer of its own.
    func hit(_ domain: String, zone: String, generation: Int, at now: Double) -> Hit? {
        var key = domain, zoneText = zone
        var out = ByteBuffer()
        let found = key.withUTF8 { name in
            zoneText.withUTF8 { zoneBytes in
                hit(UnsafeRawBufferPointer(name), zone: UnsafeRawBufferPointer(zoneBytes), generation: generation, at: now, into: &out)
            }
        }
        return found.map { Hit(expiresAt: $0.expiresAt, checkedAt: $0.checkedAt, negative: $0.negative, reply: $0.replied ? out : nil) }
    }

    /// The slot and hit for `name`, the kept reply appended to `out`; `consistent` false when
    /// what was read does not hold together. Valid only if the sequence did not change meanwhile.
    private func probe(_ h: UInt64, _ name: UnsafeRawBufferPointer, _ zone: UnsafeRawBufferPointer, _ generation: Int,
                       into out: inout ByteBuffer) -> (found: (Int, Probe)?, consistent: Bool) {
        let (located, consistent) = locate(name, h)
        guard let (k, record) = located else { return (nil, consistent) }
        var replied = false
        if record.hasReply, record.generation == Self.generation(generation), zoneMatches(record.zone, zone) {
            out.writeBytes(record.reply)
            replied = true
        }
        return ((k, Probe(expiresAt: record.expiresAt, checkedAt: record.checkedAt, negative: record.negative, replied: replied)), true)
    }

    /// The slot and record holding `name` (hash `h`), for readers and writers alike; `consistent`
    /// false when an index word or a record's lengths point outside the region (a reader saw a
    /// move half done: it reads again; never the case under the writers' lock).
    private func locate(_ name: UnsafeRawBufferPointer, _ h: UInt64) -> (found: (slot: Int, record: Record)?, consistent: Bool) {
        let count = slotCount  // read once: a reader may see it double (the sequence tells)
        let mask = count - 1
        var k = Int(truncatingIfNeeded: h) & mask
        let tag = h >> 40
        for _ in 0..<count {
            let word = slot(k).load(ordering: .acquiring)
            if word == 0 { return (nil, true) }
            if word != 1 && word >> 40 == tag {
                let offset = Int(word & Self.offsetMask) << 3
                guard offset >= Self.firstOffset, offset <= regionSize - Self.headerSize else { return (nil, false) }
                let record = Record(base: region + offset)
                if record.domainCount == name.count {
                    guard offset + record.replyStart + record.replyRoom + record.packedCount <= regionSize, record.replyCount <= record.replyRoom else { return (nil, false) }
                    if memcmp(record.domain.baseAddress!, name.baseAddress!, name.count) == 0 { return ((k, record), true) }
                }
            }
            k = (k + 1) & mask
        }
        return (nil, true)
    }

    /// Is `zone` (1 + an index, 0 for none) the name `bytes`?
    private func zoneMatches(_ zone: Int, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard zone > 0, zone <= 255 else { return false }
        let entry = zoneTable + (zone - 1) * Self.zoneSlot
        let count = Int(entry.load(as: UInt8.self))
        return count == bytes.count && (count == 0 || memcmp(entry + 1, bytes.baseAddress!, count) == 0)
    }

    /// 1 + the index of `zone` in the table, added if new (writer); nil when the name is too
    /// long or the table is full (the reply is then not kept).
    private func zoneIndex(_ zone: String) -> Int? {
        var name = zone
        return name.withUTF8 { bytes -> Int? in
            let raw = UnsafeRawBufferPointer(bytes)
            for k in 0..<zoneNames where zoneMatches(k + 1, raw) { return k + 1 }
            guard raw.count < Self.zoneSlot, zoneNames < 255 else { return nil }
            let entry = zoneTable + zoneNames * Self.zoneSlot
            if raw.count > 0 { (entry + 1).copyMemory(from: raw.baseAddress!, byteCount: raw.count) }
            entry.storeBytes(of: UInt8(raw.count), as: UInt8.self)
            zoneNames += 1
            return zoneNames
        }
    }

    /// A use, written coarsely: once per entry per minute at most.
    private func markUsed(_ k: Int, at now: Double) {
        guard now - Double(bitPattern: lastUse(k).load(ordering: .relaxed)) >= 60 else { return }
        lastUse(k).store(now.bitPattern, ordering: .relaxed)
        usedMark(k).store(1, ordering: .relaxed)
    }

    // MARK: the writers (under `writer`)

    /// The slot holding `domain`, or nil.
    private func find(_ name: UnsafeRawBufferPointer, _ h: UInt64) -> Int? { locate(name, h).found?.slot }

    private func find(_ domain: String) -> Int? {
        var d = domain
        return d.withUTF8 { find(UnsafeRawBufferPointer($0), Self.hash(UnsafeRawBufferPointer($0))) }
    }

    private func record(at k: Int) -> Record {
        Record(base: region + (Int(slot(k).load(ordering: .relaxed) & Self.offsetMask) << 3))
    }

    private func entry(at k: Int) -> CacheEntry? {
        let record = record(at: k)
        return PackedEntry.unpack(Array(record.packed), domain: String(decoding: record.domain, as: UTF8.self), fetchedAt: record.fetchedAt,
                                  expiresAt: record.expiresAt, checkedAt: record.checkedAt, lastUsed: Double(bitPattern: lastUse(k).load(ordering: .relaxed)))
    }

    var count: Int { writer.withLock { liveCount } }

    /// The bytes the arena's records take, garbage included (tests).
    var arenaBytes: Int { writer.withLock { end } }

    func peek(_ domain: String) -> CacheEntry? {
        writer.withLock { find(domain).flatMap(entry(at:)) }
    }

    func use(_ domain: String, at now: Double) -> CacheEntry? {
        writer.withLock {
            guard let k = find(domain) else { return nil }
            markUsed(k, at: now)
            return entry(at: k)
        }
    }

    func put(_ entry: CacheEntry) { writer.withLock { insert(entry) } }

    func put(_ entries: [CacheEntry]) { writer.withLock { entries.forEach { insert($0) } } }

    /// Puts `entry` unless the layer holds a newer one for its domain (fetched or checked later);
    /// returns the entry now cached.
    func putUnlessNewer(_ entry: CacheEntry) -> CacheEntry {
        writer.withLock {
            if let k = find(entry.domain) {
                let current = record(at: k)
                if current.fetchedAt > entry.fetchedAt || (current.fetchedAt == entry.fetchedAt && current.checkedAt >= entry.checkedAt),
                   let decoded = self.entry(at: k) {
                    return decoded
                }
            }
            insert(entry)
            return entry
        }
    }

    func remove(_ domain: String) { writer.withLock { delete(domain) } }

    func remove(_ domains: [String]) { writer.withLock { domains.forEach { delete($0) } } }

    private func delete(_ domain: String) {
        guard let k = find(domain) else { return }
        liveBytes -= record(at: k).size
        liveCount -= 1
        slot(k).store(1, ordering: .releasing)
        removedSlots += 1
        usedMark(k).store(0, ordering: .relaxed)
    }

    /// Room for the reply a policy's record keeps, so that keeping it later writes it in place
    /// instead of appending a copy: the size of the netstring of the default zone's reply,
    /// `OK secure match=NAMES servername=hostname`, NAMES being the plain patterns and the MX
    /// hosts a wildcard covers (as `SocketmapReply.render` makes them). Another zone's longer
    /// reply (TLSRPT attributes) takes a copy of the record.
    static func replyRoom(_ entry: CacheEntry) -> Int {
        guard let policy = entry.policy else { return 32 }
        var names = Set(policy.mx.filter { !$0.isWildcard }.map(\.text))
        let wildcards = policy.mx.filter(\.isWildcard)
        for host in entry.mxHosts ?? [] where wildcards.contains(where: { $0.matches(normalized: host) }) { names.insert(host) }
        let list = names.isEmpty ? 38 : names.reduce(-1) { $0 + $1.utf8.count + 1 }
        let body = 36 + list
        return body + String(body).utf8.count + 2
    }

    private func insert(_ entry: CacheEntry) {
        let packed = PackedEntry.pack(entry)
        var domain = entry.domain
        domain.withUTF8 { nameBytes in
            let name = UnsafeRawBufferPointer(nameBytes)
            guard name.count <= 255 else { return }
            let h = Self.hash(name)
            let existing = find(name, h)
            // The same entry checked again (a record check that changed nothing): its check time
            // is written in place and the reply rendered from it stays.
            if let k = existing {
                let current = record(at: k)
                if current.holds(entry, packed: packed) {
                    if current.checkedAt != entry.checkedAt {
                        sequence.wrappingIncrement(ordering: .sequentiallyConsistent)
                        current.setCheckedAt(entry.checkedAt)
                        sequence.wrappingIncrement(ordering: .sequentiallyConsistent)
                    }
                    lastUse(k).store(entry.lastUsed.bitPattern, ordering: .relaxed)
                    return
                }
            }
            let room = Self.replyRoom(entry)
            let size = Self.recordSize(domain: name.count, replyRoom: room, packed: packed.count)
            guard let offset = reserve(size) else { return }
            let base = region + offset
            Record(base: base).setHeader(expiresAt: entry.expiresAt, checkedAt: entry.checkedAt, fetchedAt: entry.fetchedAt, generation: 0,
                                         packedCount: packed.count, replyCount: 0, replyRoom: room, domainCount: name.count, zone: 0,
                                         flags: entry.policy == nil ? 1 : 0)
            (base + Self.headerSize).copyMemory(from: name.baseAddress!, byteCount: name.count)
            packed.withUnsafeBytes { (base + Self.headerSize + name.count + room).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            let word = (h >> 40) << 40 | UInt64(offset >> 3)
            // A compaction in `reserve` may have moved the old record: look again.
            if let k = existing.flatMap({ _ in find(name, h) }) {
                liveBytes -= record(at: k).size
                slot(k).store(word, ordering: .releasing)
                lastUse(k).store(entry.lastUsed.bitPattern, ordering: .relaxed)
            } else {
                let k = freeSlot(h)
                if slot(k).load(ordering: .relaxed) == 1 { removedSlots -= 1 }
                lastUse(k).store(entry.lastUsed.bitPattern, ordering: .relaxed)
                usedMark(k).store(0, ordering: .relaxed)
                slot(k).store(word, ordering: .releasing)
                liveCount += 1
            }
            liveBytes += size
            end = offset + size
        }
        if liveCount > capacity { evictLeastRecentlyUsed() }
        if liveCount * 2 > slotCount, slotCount < maxSlots {
            grow()
        } else if removedSlots > slotCount / 4 {
            // Many removed slots lengthen probes: the index is built again.
            compact()
        }
    }

    /// The first empty or removed slot on `h`'s probe path.
    private func freeSlot(_ h: UInt64) -> Int {
        let mask = slotCount - 1
        var k = Int(truncatingIfNeeded: h) & mask
        while slot(k).load(ordering: .relaxed) > 1 { k = (k + 1) & mask }
        return k
    }

    /// Doubles the index and places every live record's word again (the records do not move),
    /// with the sequence odd meanwhile: a reader that saw the old size reads again.
    private func grow() {
        let live = liveSlots()
        sequence.wrappingIncrement(ordering: .sequentiallyConsistent)
        clearIndex()
        slotCountStore.store(slotCount * 2, ordering: .relaxed)
        for item in live { place(item, at: item.offset) }
        removedSlots = 0
        growths += 1
        sequence.wrappingIncrement(ordering: .sequentiallyConsistent)
    }

    /// A live slot of the index, as a rebuild (growth, compaction) carries it over.
    private struct LiveSlot {
        var word: UInt64
        var hash: UInt64
        var lastUsed: UInt64
        var used: UInt8
        var offset: Int { Int(word & HotCache.offsetMask) << 3 }
    }

    /// The index's live slots (the hash read again from the record: the word keeps 24 bits of it).
    private func liveSlots() -> [LiveSlot] {
        var live: [LiveSlot] = []
        live.reserveCapacity(liveCount)
        for k in 0..<slotCount {
            let word = slot(k).load(ordering: .relaxed)
            if word > 1 {
                live.append(LiveSlot(word: word, hash: Record(base: region + (Int(word & Self.offsetMask) << 3)).hash,
                                     lastUsed: lastUse(k).load(ordering: .relaxed), used: usedMark(k).load(ordering: .relaxed)))
            }
        }
        return live
    }

    /// Empties the index (with the sequence odd).
    private func clearIndex() {
        for k in 0..<slotCount {
            slot(k).store(0, ordering: .relaxed)
            usedMark(k).store(0, ordering: .relaxed)
        }
    }

    /// Puts `item` back into the index, its record now at `offset`.
    private func place(_ item: LiveSlot, at offset: Int) {
        let k = freeSlot(item.hash)
        slot(k).store((item.hash >> 40) << 40 | UInt64(offset >> 3), ordering: .relaxed)
        lastUse(k).store(item.lastUsed, ordering: .relaxed)
        usedMark(k).store(item.used, ordering: .relaxed)
    }

    /// The offset for a record of `size` bytes at the end of the arena, after moving the records
    /// together if the space left by replaced and removed ones is large, or the region is full
    /// (then the least recently used tenth leaves if that is not enough). Nil: it does not fit.
    private func reserve(_ size: Int) -> Int? {
        let garbage = end - Self.firstOffset - liveBytes
        if end + size > regionSize || garbage > max(liveBytes / 4, 1 << 20) { compact() }
        if end + size > regionSize {
            evictLeastRecentlyUsed()
            compact()
        }
        return end + size <= regionSize ? end : nil
    }

    /// Moves the live records together in address order, builds the index again without the
    /// removed slots, and gives the freed pages back, with the sequence odd meanwhile.
    private func compact() {
        var live = liveSlots()
        live.sort { $0.offset < $1.offset }
        sequence.wrappingIncrement(ordering: .sequentiallyConsistent)
        clearIndex()
        var cursor = Self.firstOffset
        for item in live {
            let size = Record(base: region + item.offset).size
            if item.offset != cursor { (region + cursor).copyMemory(from: region + item.offset, byteCount: size) }
            place(item, at: cursor)
            cursor += size
        }
        let oldEnd = end
        end = cursor
        liveBytes = cursor - Self.firstOffset
        liveCount = live.count
        removedSlots = 0
        compactions += 1
        sequence.wrappingIncrement(ordering: .sequentiallyConsistent)
        // The pages past the records are given back (a late reader finds zeros there).
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let from = (cursor + page - 1) / page * page
        if oldEnd > from { _ = madvise(region + from, oldEnd - from, Int32(MADV_DONTNEED)) }
    }

    /// Keeps `reply` for `domain` under `zone` if the entry it was rendered from is still the one
    /// cached (a reply is never kept beside a newer entry): in the record's room for it, or in a
    /// copy of the record with room enough.
    func keep(_ reply: ByteBuffer, _ domain: String, zone: String, generation: Int, renderedFrom entry: CacheEntry) {
        writer.withLock {
            guard let k = find(domain) else { return }
            let current = record(at: k)
            let packed = PackedEntry.pack(entry)
            guard current.holds(entry, packed: packed), entry.checkedAt == current.checkedAt else { return }
            let bytes = reply.readableBytesView
            guard let zone = zoneIndex(zone) else { return }
            if bytes.count <= current.replyRoom {
                // In place, with the sequence odd: a reader meanwhile reads again.
                sequence.wrappingIncrement(ordering: .sequentiallyConsistent)
                let base = current.base
                bytes.withUnsafeBytes { (base + current.replyStart).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                current.setReply(count: bytes.count, generation: Self.generation(generation), zone: zone)
                sequence.wrappingIncrement(ordering: .sequentiallyConsistent)
                return
            }
            // A new record with room for a reply that did not fit.
            let room = bytes.count
            let size = Self.recordSize(domain: current.domainCount, replyRoom: room, packed: packed.count)
            let oldSize = current.size
            guard let offset = reserve(size), let k = find(domain) else { return }  // (reserve may move records)
            let old = record(at: k)
            let base = region + offset
            Record(base: base).setHeader(expiresAt: old.expiresAt, checkedAt: old.checkedAt, fetchedAt: old.fetchedAt,
                                         generation: Self.generation(generation), packedCount: old.packedCount, replyCount: bytes.count,
                                         replyRoom: room, domainCount: old.domainCount, zone: zone, flags: old.flags | 2)
            (base + Self.headerSize).copyMemory(from: old.domain.baseAddress!, byteCount: old.domainCount)
            let replyAt = Self.headerSize + old.domainCount
            bytes.withUnsafeBytes { (base + replyAt).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            packed.withUnsafeBytes { (base + replyAt + room).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            let h = old.hash
            slot(k).store((h >> 40) << 40 | UInt64(offset >> 3), ordering: .releasing)
            liveBytes += size - oldSize
            end = offset + size
        }
    }

    /// The entries whose times pass `filter` (fetched, expires, checked, last used, negative),
    /// decoded; the others are not.
    func entries(where filter: (_ fetchedAt: Double, _ expiresAt: Double, _ checkedAt: Double, _ lastUsed: Double, _ negative: Bool) -> Bool) -> [CacheEntry] {
        writer.withLock {
            (0..<slotCount).compactMap { k in
                guard isOccupied(k) else { return nil }
                let r = record(at: k)
                return filter(r.fetchedAt, r.expiresAt, r.checkedAt, Double(bitPattern: lastUse(k).load(ordering: .relaxed)), r.negative) ? entry(at: k) : nil
            }
        }
    }

    /// The domains whose times pass `filter`.
    func domains(where filter: (_ expiresAt: Double, _ lastUsed: Double, _ negative: Bool) -> Bool) -> [String] {
        writer.withLock {
            (0..<slotCount).compactMap { k in
                guard isOccupied(k) else { return nil }
                let r = record(at: k)
                return filter(r.expiresAt, Double(bitPattern: lastUse(k).load(ordering: .relaxed)), r.negative) ? String(decoding: r.domain, as: UTF8.self) : nil
            }
        }
    }

    /// Domains used since the last call, for the persistent store's last-use column.
    func takeUsed() -> [String] {
        writer.withLock {
            (0..<slotCount).compactMap { k in
                guard isOccupied(k), usedMark(k).exchange(0, ordering: .relaxed) != 0 else { return nil }
                return String(decoding: record(at: k).domain, as: UTF8.self)
            }
        }
    }

    /// "No policy" entries leave first (least recently used first), policies only when nothing
    /// else is left: mail to thousands of domains without MTA-STS cannot push a cached enforce
    /// policy out of memory (after which blocking its policy host would downgrade the domain).
    private func evictLeastRecentlyUsed() {
        let drop = max(1, capacity / 10)
        func rank(_ k: Int) -> Double {
            let used = Double(bitPattern: lastUse(k).load(ordering: .relaxed))
            return record(at: k).negative ? used - 1e15 : used
        }
        let occupied = (0..<slotCount).filter(isOccupied)
        guard !occupied.isEmpty else { return }
        var ranks = occupied.map(rank)
        ranks.sort()
        let cutoff = ranks[min(drop, ranks.count) - 1]
        var dropped = 0
        for k in occupied where dropped < drop && rank(k) <= cutoff {
            liveBytes -= record(at: k).size
            liveCount -= 1
            slot(k).store(1, ordering: .releasing)
            usedMark(k).store(0, ordering: .relaxed)
            removedSlots += 1
            dropped += 1
        }
    }

    /// Does slot `k` hold a record (not empty, not removed)?
    private func isOccupied(_ k: Int) -> Bool { slot(k).load(ordering: .relaxed) > 1 }
}

/// A cache entry without its domain and times, in one byte array: flags, the DANE state, then
/// the optional fields, each with a variable-length (LEB128) length: the policy in its compact
/// form (`STSPolicy.compactBytes`, or its canonical text where it has none, read back by
/// `STSPolicy.parseCanonical`), the failure time as its bit pattern, the MX hosts each as the
/// index of the policy's `mx` pattern that names it or as its text.
enum PackedEntry {
    /// Flag bit 7: the policy is in `STSPolicy.compactBytes` form, not its text.
    static let compactPolicy: UInt8 = 1 << 7
    /// A host byte below this is the index of a policy pattern; this one says the text follows.
    static let literalHost: UInt8 = 0xFF

    static func pack(_ e: CacheEntry) -> [UInt8] {
        var out: [UInt8] = []
        let compact = e.policy?.compactBytes
        let policy = compact == nil ? e.policy?.render(lineEnding: "\n") : nil
        var flags: UInt8 = compact == nil ? 0 : compactPolicy
        for (bit, present) in [e.policy != nil, e.stsID != nil, e.failedID != nil, e.failedAt != nil, e.failure != nil, e.reason != nil, e.mxHosts != nil].enumerated() where present {
            flags |= 1 << UInt8(bit)
        }
        out.reserveCapacity(8 + (compact?.count ?? policy?.utf8.count ?? 0) + (e.stsID?.utf8.count ?? 0) + (e.mxHosts?.count ?? 0))
        out.append(flags)
        out.append(UInt8(e.dane.rawValue))
        func length(_ n: Int) {
            var n = UInt64(n)
            while n >= 0x80 {
                out.append(UInt8(n & 0x7F) | 0x80)
                n >>= 7
            }
            out.append(UInt8(n))
        }
        func bytes(_ b: some Collection<UInt8>) {
            length(b.count)
            out.append(contentsOf: b)
        }
        func string(_ s: String?) { if let s { bytes(s.utf8) } }
        if let compact { bytes(compact) } else { string(policy) }
        string(e.stsID)
        string(e.failedID)
        if let failedAt = e.failedAt { withUnsafeBytes(of: failedAt.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
        string(e.failure?.rawValue)
        string(e.reason)
        if let hosts = e.mxHosts {
            // Most hosts are named by a pattern of the policy: one byte each.
            let patterns = compact == nil ? [] : (e.policy?.mx.map(\.text) ?? [])
            length(hosts.count)
            for host in hosts {
                if let k = patterns.firstIndex(of: host), k < Int(literalHost) {
                    out.append(UInt8(k))
                } else {
                    out.append(literalHost)
                    string(host)
                }
            }
        }
        return out
    }

    static func unpack(_ bytes: [UInt8], domain: String, fetchedAt: Double, expiresAt: Double, checkedAt: Double, lastUsed: Double) -> CacheEntry? {
        guard bytes.count >= 2 else { return nil }
        let flags = bytes[0]
        var i = 2
        func has(_ bit: Int) -> Bool { flags & (1 << UInt8(bit)) != 0 }
        func length() -> Int? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while i < bytes.count, shift < 35 {
                let b = bytes[i]
                i += 1
                value |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { return Int(value) }
                shift += 7
            }
            return nil
        }
        func chunk() -> ArraySlice<UInt8>? {
            guard let count = length(), bytes.count - i >= count else { return nil }
            defer { i += count }
            return bytes[i..<(i + count)]
        }
        func field(_ bit: Int) -> ArraySlice<UInt8>?? {
            guard has(bit) else { return .some(nil) }
            guard let c = chunk() else { return nil }
            return .some(c)
        }
        func string(_ bit: Int) -> String?? {
            guard let f = field(bit) else { return nil }
            return .some(f.map { String(decoding: $0, as: UTF8.self) })
        }
        guard let policyBytes = field(0), let stsID = string(1), let failedID = string(2) else { return nil }
        var failedAt: Double?
        if has(3) {
            guard bytes.count - i >= 8 else { return nil }
            var bits: UInt64 = 0
            for k in 0..<8 { bits |= UInt64(bytes[i + k]) << (8 * k) }
            i += 8
            failedAt = Double(bitPattern: bits)
        }
        guard let failure = string(4), let reason = string(5) else { return nil }
        var policy: STSPolicy?
        if let policyBytes {
            if flags & compactPolicy != 0 {
                guard let parsed = STSPolicy(compact: policyBytes) else { return nil }
                policy = parsed
            } else {
                let text = String(decoding: policyBytes, as: UTF8.self)
                guard let parsed = STSPolicy.parseCanonical(text) ?? STSPolicy.parse(text).policy else { return nil }
                policy = parsed
            }
        }
        var hosts: [String]?
        if has(6) {
            let patterns = flags & compactPolicy != 0 ? (policy?.mx ?? []) : []
            guard let count = length(), count <= bytes.count - i else { return nil }
            var list: [String] = []
            list.reserveCapacity(count)
            for _ in 0..<count {
                guard i < bytes.count else { return nil }
                let k = bytes[i]
                i += 1
                if k == literalHost {
                    guard let text = chunk() else { return nil }
                    list.append(String(decoding: text, as: UTF8.self))
                } else {
                    guard Int(k) < patterns.count else { return nil }
                    list.append(patterns[Int(k)].text)
                }
            }
            hosts = list
        }
        guard i == bytes.count else { return nil }
        return CacheEntry(domain: domain, policy: policy, stsID: stsID, fetchedAt: fetchedAt, expiresAt: expiresAt, checkedAt: checkedAt,
                          failedID: failedID, failedAt: failedAt, failure: failure.map(ResultType.init), reason: reason,
                          dane: DANEState(rawValue: Int(bytes[1])) ?? .none, mxHosts: hosts, lastUsed: lastUsed)
    }
}

/// The resolver's counters: swift-metrics (exported at `/metrics` by the daemon) and a local
/// count for `mtasts query` and the tests. Make them after `MetricsSystem.bootstrap`.
public final class ResolverMetrics: Sendable {
    public let lookups = MetricCounter("mtasts_lookups_total")
    public let hits = MetricCounter("mtasts_cache_hits_total")
    public let misses = MetricCounter("mtasts_cache_misses_total")
    public let storeHits = MetricCounter("mtasts_store_hits_total")
    public let storeErrors = MetricCounter("mtasts_store_errors_total")
    public let dnsQueries = MetricCounter("mtasts_dns_record_queries_total")
    public let refreshes = MetricCounter("mtasts_refreshes_total")
    public let refreshFailures = MetricCounter("mtasts_refresh_failures_total")
    public let evictions = MetricCounter("mtasts_evictions_total")
    /// Fetch outcomes by RFC 8460 result type (or success, no-record, dns-temporary, timeout).
    public let fetchOutcomes = LabeledCounter("mtasts_fetch_outcomes_total", dimension: "result")

    public init() {}
}

/// A swift-metrics counter that also keeps its own count (an atomic add; no lock on the hit path).
public final class MetricCounter: Sendable {
    private let value = ManagedAtomic<Int>(0)
    private let exported: Metrics.Counter

    public init(_ label: String, dimensions: [(String, String)] = []) {
        exported = Metrics.Counter(label: label, dimensions: dimensions)
    }

    public func increment(by n: Int = 1) {
        value.wrappingIncrement(by: n, ordering: .relaxed)
        exported.increment(by: n)
    }

    public var count: Int { value.load(ordering: .relaxed) }
}

/// One counter per label value (a small set: result types), made on first use.
public final class LabeledCounter: Sendable {
    private let label: String
    private let dimension: String
    private let counters = NIOLockedValueBox<[String: MetricCounter]>([:])

    public init(_ label: String, dimension: String) {
        self.label = label
        self.dimension = dimension
    }

    public func increment(_ value: String) {
        counters.withLockedValue { c in
            if let counter = c[value] { return counter }
            let counter = MetricCounter(label, dimensions: [(dimension, value)])
            c[value] = counter
            return counter
        }.increment()
    }
}
