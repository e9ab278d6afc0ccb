//! `powercut-fs DISK MOUNTPOINT`: a FUSE filesystem that behaves like a disk with a volatile
//! write cache, for testing what survives a power cut.
//!
//! `DISK` is the disk: what is in it survives a power cut. At mount, its contents are copied
//! into a volatile copy (the write cache, in a temporary directory); every read and write goes
//! to the volatile copy, and a file's written ranges and size reach the disk only when that file
//! is synced with `fsync` or `fdatasync` (which FUSE forwards as FSYNC). `sync_file_range`, a
//! close, or time do not sync anything: the kernel never forwards them to a FUSE filesystem,
//! just as a drive's write cache keeps them until a FLUSH. Namespace operations (create,
//! mkdir, unlink, rename, chmod) reach both copies at once, as if the directory were synced
//! every time: the fixture tests file contents and sizes, not directory entries.
//!
//! Signals: SIGUSR1 cuts the power (from then on every operation fails with EIO, and the
//! disk keeps only what was synced); SIGTERM or SIGINT unmounts and exits, syncing everything
//! first unless the power was cut. Either way the volatile copy is deleted.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

/// Short, so the kernel asks again soon; only this process changes the files anyway.
const TTL: Duration = Duration::from_secs(1);

struct State {
    disk: PathBuf,
    volatile: PathBuf,
    /// Inode number to path relative to the root ("" is the root, inode 1).
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_inode: u64,
    /// Open handles: the inode and the volatile file.
    handles: HashMap<u64, (u64, File)>,
    next_handle: u64,
    /// Per inode, the byte ranges `[start, end)` written since its last sync; an entry with no
    /// ranges means only the size changed.
    dirty: HashMap<u64, Vec<(u64, u64)>>,
}

struct PowerCutFs {
    state: Arc<Mutex<State>>,
    cut: Arc<AtomicBool>,
}

fn errno(error: io::Error) -> Errno {
    Errno::from_i32(error.raw_os_error().unwrap_or(libc::EIO))
}

fn attr(ino: u64, meta: &fs::Metadata) -> FileAttr {
    let time = |secs: i64, nsecs: i64| {
        UNIX_EPOCH + Duration::new(secs.max(0) as u64, nsecs.clamp(0, 999_999_999) as u32)
    };
    let kind = if meta.is_dir() {
        FileType::Directory
    } else if meta.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size: meta.len(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

impl State {
    fn path(&self, ino: u64) -> Result<&PathBuf, Errno> {
        self.paths.get(&ino).ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    fn inode(&mut self, rel: &Path) -> u64 {
        if let Some(ino) = self.inodes.get(rel) {
            return *ino;
        }
        let ino = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(rel.to_path_buf(), ino);
        self.paths.insert(ino, rel.to_path_buf());
        ino
    }

    fn forget_path(&mut self, rel: &Path) {
        if let Some(ino) = self.inodes.remove(rel) {
            self.paths.remove(&ino);
            self.dirty.remove(&ino);
        }
    }

    fn entry(&mut self, rel: &Path) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(self.volatile.join(rel)).map_err(errno)?;
        let ino = self.inode(rel);
        Ok(attr(ino, &meta))
    }

    fn mark(&mut self, ino: u64, start: u64, len: u64) {
        let ranges = self.dirty.entry(ino).or_default();
        let end = start + len;
        match ranges.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ if len > 0 => ranges.push((start, end)),
            _ => {}
        }
    }

    /// Writes the inode's dirty ranges and size to the disk and syncs them there.
    fn sync(&mut self, ino: u64) -> io::Result<()> {
        let Some(mut ranges) = self.dirty.remove(&ino) else {
            return Ok(());
        };
        let Some(rel) = self.paths.get(&ino) else {
            return Ok(()); // unlinked: nothing of it is left to keep
        };
        let source = File::open(self.volatile.join(rel))?;
        let len = source.metadata()?.len();
        let target = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.disk.join(rel))?;
        target.set_len(len)?;
        ranges.sort_unstable();
        let mut buf = Vec::new();
        let mut done = 0;
        for (start, end) in ranges {
            let (start, end) = (start.max(done), end.min(len));
            if start >= end {
                continue;
            }
            buf.resize((end - start) as usize, 0);
            source.read_exact_at(&mut buf, start)?;
            target.write_all_at(&buf, start)?;
            done = end;
        }
        target.sync_all()
    }

    fn sync_everything(&mut self) -> io::Result<()> {
        let inodes: Vec<u64> = self.dirty.keys().copied().collect();
        for ino in inodes {
            self.sync(ino)?;
        }
        Ok(())
    }
}

impl PowerCutFs {
    /// The state, unless the power is cut.
    fn powered(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.cut.load(Ordering::Acquire) {
            return Err(Errno::EIO);
        }
        Ok(state)
    }
}

/// Copies the directory tree `from` into `to` (which exists).
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let meta = entry.metadata()?;
        if meta.is_dir() {
            fs::create_dir(&target)?;
            fs::set_permissions(&target, meta.permissions())?;
            copy_tree(&entry.path(), &target)?;
        } else if meta.is_file() {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.powered().and_then(|mut s| {
            let rel = s.child(parent.0, name)?;
            s.entry(&rel)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = self.powered().and_then(|s| {
            let meta = match fh.and_then(|fh| s.handles.get(&fh.0)) {
                Some((_, file)) => file.metadata(),
                None => fs::symlink_metadata(s.volatile.join(s.path(ino.0)?)),
            };
            meta.map(|m| attr(ino.0, &m)).map_err(errno)
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.powered().and_then(|mut s| {
            let rel = s.path(ino.0)?.clone();
            let volatile = s.volatile.join(&rel);
            if let Some(mode) = mode {
                let permissions = fs::Permissions::from_mode(mode & 0o7777);
                fs::set_permissions(&volatile, permissions.clone()).map_err(errno)?;
                // A chmod is metadata: it reaches the disk at once, like the namespace.
                let _ = fs::set_permissions(s.disk.join(&rel), permissions);
            }
            if let Some(size) = size {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&volatile)
                    .map_err(errno)?;
                file.set_len(size).map_err(errno)?;
                s.dirty.entry(ino.0).or_default();
            }
            let meta = fs::symlink_metadata(&volatile).map_err(errno)?;
            Ok(attr(ino.0, &meta))
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.powered().and_then(|mut s| {
            let rel = s.child(parent.0, name)?;
            let mode = mode & !umask & 0o7777;
            for root in [&s.volatile, &s.disk] {
                fs::create_dir(root.join(&rel)).map_err(errno)?;
                fs::set_permissions(root.join(&rel), fs::Permissions::from_mode(mode))
                    .map_err(errno)?;
            }
            s.entry(&rel)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.powered().and_then(|mut s| {
            let rel = s.child(parent.0, name)?;
            fs::remove_file(s.volatile.join(&rel)).map_err(errno)?;
            let _ = fs::remove_file(s.disk.join(&rel));
            s.forget_path(&rel);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.powered().and_then(|mut s| {
            let rel = s.child(parent.0, name)?;
            fs::remove_dir(s.volatile.join(&rel)).map_err(errno)?;
            let _ = fs::remove_dir(s.disk.join(&rel));
            s.forget_path(&rel);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.powered().and_then(|mut s| {
            if flags != RenameFlags::empty() {
                return Err(Errno::EINVAL);
            }
            let from = s.child(parent.0, name)?;
            let to = s.child(newparent.0, newname)?;
            fs::rename(s.volatile.join(&from), s.volatile.join(&to)).map_err(errno)?;
            let _ = fs::rename(s.disk.join(&from), s.disk.join(&to));
            s.forget_path(&to);
            let moved: Vec<(u64, PathBuf)> = s
                .paths
                .iter()
                .filter_map(|(ino, path)| {
                    let rest = path.strip_prefix(&from).ok()?;
                    Some((*ino, to.join(rest)))
                })
                .collect();
            for (ino, path) in moved {
                if let Some(old) = s.paths.insert(ino, path.clone()) {
                    s.inodes.remove(&old);
                }
                s.inodes.insert(path, ino);
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = self.powered().and_then(|mut s| {
            let path = s.volatile.join(s.path(ino.0)?);
            let access = flags.0 & libc::O_ACCMODE;
            let file = OpenOptions::new()
                .read(access != libc::O_WRONLY)
                .write(access != libc::O_RDONLY)
                .open(path)
                .map_err(errno)?;
            if flags.0 & libc::O_TRUNC != 0 && access != libc::O_RDONLY {
                file.set_len(0).map_err(errno)?;
                s.dirty.entry(ino.0).or_default();
            }
            let fh = s.next_handle;
            s.next_handle += 1;
            s.handles.insert(fh, (ino.0, file));
            Ok(fh)
        });
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.powered().and_then(|mut s| {
            let rel = s.child(parent.0, name)?;
            let mode = mode & !umask & 0o7777;
            let access = flags & libc::O_ACCMODE;
            let file = OpenOptions::new()
                .read(access != libc::O_WRONLY)
                .write(true)
                .create(true)
                .truncate(flags & libc::O_TRUNC != 0)
                .mode(mode)
                .open(s.volatile.join(&rel))
                .map_err(errno)?;
            // The directory entry is on the disk at once; the contents only when synced.
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(mode)
                .open(s.disk.join(&rel))
                .map_err(errno)?;
            let attr = s.entry(&rel)?;
            s.dirty.entry(attr.ino.0).or_default();
            let fh = s.next_handle;
            s.next_handle += 1;
            s.handles.insert(fh, (attr.ino.0, file));
            Ok((attr, fh))
        });
        match result {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.powered().and_then(|s| {
            let (_, file) = s.handles.get(&fh.0).ok_or(Errno::EBADF)?;
            let mut buf = vec![0; size as usize];
            let mut filled = 0;
            while filled < buf.len() {
                match file.read_at(&mut buf[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            buf.truncate(filled);
            Ok(buf)
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self.powered().and_then(|mut s| {
            let (ino, file) = s.handles.get(&fh.0).ok_or(Errno::EBADF)?;
            let ino = *ino;
            file.write_all_at(data, offset).map_err(errno)?;
            s.mark(ino, offset, data.len() as u64);
            Ok(data.len() as u32)
        });
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // A close syncs nothing.
        match self.powered() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        s.handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fsync and fdatasync alike make the file's data and size durable.
        let result = self
            .powered()
            .and_then(|mut s| s.sync(ino.0).map_err(errno));
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory entries reach the disk when they are made; nothing is left to sync.
        match self.powered() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.powered().and_then(|mut s| {
            let rel = s.path(ino.0)?.clone();
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (ino.0, FileType::Directory, "..".into()),
            ];
            for entry in fs::read_dir(s.volatile.join(&rel)).map_err(errno)? {
                let entry = entry.map_err(errno)?;
                let kind = match entry.file_type().map_err(errno)? {
                    t if t.is_dir() => FileType::Directory,
                    t if t.is_symlink() => FileType::Symlink,
                    _ => FileType::RegularFile,
                };
                let child = s.inode(&rel.join(entry.file_name()));
                entries.push((child, kind, entry.file_name()));
            }
            Ok(entries)
        });
        match result {
            Ok(entries) => {
                for (i, (child, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(*child), (i + 1) as u64, *kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }
}

fn main() {
    if let Err(error) = run() {
        eprintln!("powercut-fs: {error}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [disk, mountpoint] = args.as_slice() else {
        return Err(io::Error::other("usage: powercut-fs DISK MOUNTPOINT"));
    };
    let disk = fs::canonicalize(disk)?;
    let volatile = std::env::temp_dir().join(format!("powercut-volatile-{}", std::process::id()));
    fs::create_dir(&volatile)?;
    copy_tree(&disk, &volatile)?;
    let mut state = State {
        disk,
        volatile: volatile.clone(),
        paths: HashMap::new(),
        inodes: HashMap::new(),
        next_inode: 2,
        handles: HashMap::new(),
        next_handle: 1,
        dirty: HashMap::new(),
    };
    state.paths.insert(1, PathBuf::new());
    state.inodes.insert(PathBuf::new(), 1);
    let state = Arc::new(Mutex::new(state));
    let cut = Arc::new(AtomicBool::new(false));
    let fs = PowerCutFs {
        state: state.clone(),
        cut: cut.clone(),
    };
    let mut signals = Signals::new([SIGUSR1, SIGTERM, SIGINT])?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("powercut".into()),
        MountOption::Subtype("powercut".into()),
    ];
    let session = fuser::spawn_mount(fs, mountpoint, &config)?;
    println!("mounted {}", mountpoint.display());
    for signal in signals.forever() {
        if signal == SIGUSR1 {
            // Taking the lock first means no operation is half done when the power goes.
            let _state = state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            cut.store(true, Ordering::Release);
            println!("power cut");
        } else {
            break;
        }
    }
    if !cut.load(Ordering::Acquire) {
        let mut state = state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.sync_everything()?;
        cut.store(true, Ordering::Release);
    }
    let unmounted = session.umount_and_join();
    fs::remove_dir_all(&volatile)?;
    unmounted
}
